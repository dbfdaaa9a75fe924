"""Every registered experiment on hand-made run results (tf-models factory_test style), the readings reaching all
three verdicts, the report assembled from them, and the study's checks before anything is written."""
import dataclasses
import itertools
import os
import re
import zlib

import numpy as np
import tensorflow as tf

from transfusion_tf import files, models
from transfusion_tf.data import registry as data_registry
from transfusion_tf.data import tasks
from transfusion_tf.errors import UsageError
from transfusion_tf.experiments import (answer, catalog, common, plan, power, registry, report, stats, study, t1,
                                        wt)
from transfusion_tf.training import metrics, rundir, trainer

N_TEST = 3000
VERDICTS = {"holds", "does not hold", "inconclusive"}


def _base(dataset="synthetic_retina"):
  return trainer.TrainConfig(dataset=dataset, image_size=32, train_steps=400, eval_every=25, convergence_auc=0.8,
                             model_kwargs={"width_multiplier": 0.125})


def _labels(task):
  rng = np.random.default_rng(123)
  if task.kind == "multilabel":
    return (rng.random((N_TEST, 5)) < 0.4).astype(np.int8)
  return (rng.random(N_TEST) < 0.4).astype(np.int8)


def fake_run(path, task, run, quality, speed):
  """A finished run: scores = a shared per-image signal x quality plus a little run noise (so two runs on the
  same images are strongly correlated, as real models are); curve = 0.5 -> plateau with time constant `speed`, plus
  evaluation noise, over 400 steps (the readings' curve area is taken to step 100), the checkpoint picked at its
  best evaluation."""
  os.makedirs(path, exist_ok=True)
  labels = _labels(task)
  shared = np.random.default_rng(7).normal(size=labels.shape)
  # zlib.crc32, not hash(): str hashes change with each process (PYTHONHASHSEED), which made the fake runs, and
  # the verdicts some tests read from them, differ from one pytest run to the next.
  noise = np.random.default_rng(1000 + run.seed + 17 * zlib.crc32(run.name.encode()) % 1000).normal(size=labels.shape)
  scores = quality * labels + shared + 0.05 * noise
  keys = ["auc_referable"] if task.kind == "grading" else [f"auc_{tasks.metric_key(p)}" for p in
                                                            tasks.CXR_PATHOLOGIES]
  preds = {}
  test = {}
  for j, key in enumerate(keys):
    s, y = (scores, labels) if labels.ndim == 1 else (scores[:, j], labels[:, j])
    preds[f"{key}.scores"], preds[f"{key}.labels"] = s.astype(np.float64), y
    test[key] = metrics.roc_auc(y, s)
  if task.kind == "multilabel":
    test["auc_mean"] = float(np.mean([test[k] for k in keys]))
  preds["index"] = np.arange(N_TEST)
  with files.atomic_open(os.path.join(path, "test_predictions.npz"), "wb") as f:
    np.savez(f, **preds)
  primary = task.primary_metric
  plateau = test[primary]
  jitter = np.random.default_rng(run.seed + 31 * len(run.name)).normal(0.0, 0.0005, 17)
  curve = [{"step": s, "seconds": float(s), primary: plateau - (plateau - 0.5) * np.exp(-s / speed)
            + 0.001 * run.seed + jitter[i]} for i, s in enumerate(range(0, 401, 25))]
  best = max(curve, key=lambda p: p[primary])
  files.atomic_write_json(os.path.join(path, "curve.json"), curve)
  files.atomic_write_json(os.path.join(path, "result.json"), {
      "final": dict(curve[-1]), "best": dict(best), "selected": {
          "rule": "best validation", "step": best["step"], "validation": {primary: best[primary]}, "test": test,
          "predictions": "test_predictions.npz"},
      "seconds": 1.0, "source_weights": None, "device": "CPU: test", "steps_to_threshold": None})


def fake_analyses(cfg, runs):
  """Hand-made F2-F5 JSON with clear effects (what the analyses would write)."""
  f2 = {"png": os.path.join(cfg.out, "analysis", "f2.png"), "pairs": []}
  f3 = {"png": os.path.join(cfg.out, "analysis", "f3.png"), "runs": []}
  f4 = {"png": os.path.join(cfg.out, "analysis", "f4.png"), "subsets": 4, "points": [], "panels": []}
  rng = np.random.default_rng(0)
  cell = {"datapoints": 1000, "neurons": [8, 8], "below_min": False, "baseline": {"svcca": 0.1}}
  d = lambda m, init, seed: plan.run_dir(cfg, plan.Run(m, init, seed))  # noqa: E731
  for m in cfg.models:
    top = list(plan.model_stages(m)[-2:])
    pairs = ([("pretrained_vs_random", 0.5, d(m, "pretrained", i), d(m, "random", i)) for i in range(cfg.seeds)]
             + [("random_vs_random", 0.7, d(m, "random", i), d(m, "random", i + 1))
                for i in range(0, cfg.seeds - 1, 2)])
    for kind, sim, a, b in pairs:  # The analysis' disjoint pairs.
      f2["pairs"].append({"model": m, "kind": kind, "stages": top, "per_stage": {s: dict(cell) for s in top},
                          "similarity": sim + 0.01 * rng.normal(), "run_a": a, "run_b": b})
    stages = list(plan.model_stages(m))
    for kind, gap in (("pretrained", 0.2), ("random", 0.0), ("unrelated_init", -0.3)):
      for k in range(cfg.seeds):
        sims = {s: max(0.0, 0.9 - 0.15 * i + (gap if i < 2 else 0.0) + 0.01 * rng.normal())
                for i, s in enumerate(stages)}
        run = d(m, "random" if kind == "unrelated_init" else kind, k)
        f3["runs"].append({"model": m, "kind": kind, "stages": stages, "similarity": sims, "run": run,
                           "per_stage": {s: dict(cell) for s in stages}})
  for m in plan.figure_models(cfg):
    for kind in ("random-random", "random-pretrained"):
      strong = m == "resnet50"
      f4["panels"].append({"model": m, "stage": plan.model_stages(m)[0], "pair_kind": kind, "pairs": 4,
                           "r2": 0.9 if strong else 0.05, "r2_ci": [0.7, 0.97] if strong else [0.0, 0.3]})
  f5 = {"png": os.path.join(cfg.out, "analysis", "f5.png"), "panels": [], "runs": []}
  for m in plan.figure_models(cfg):
    for kind in ("random", "pretrained"):
      moved = 0.05 if m == "resnet50" else 0.8
      for k in range(cfg.seeds):
        f5["runs"].append({"run": d(m, kind, k), "model": m, "kind": kind, "moved": moved + 0.01 * rng.normal(),
                           "selectivity_before": (0.5 if kind == "pretrained" else 0.15) + 0.01 * rng.normal(),
                           "selectivity_after": (0.45 if kind == "pretrained" else 0.2) + 0.01 * rng.normal()})
      f5["panels"].append({"model": m, "kind": kind, "per_filter": list(moved + 0.01 * rng.normal(size=16)),
                           "selectivity_per_filter_before": list((0.5 if kind == "pretrained" else 0.15)
                                                                 + 0.02 * rng.normal(size=16)),
                           "selectivity_per_filter_after": list(0.3 + 0.02 * rng.normal(size=16)),
                           "selectivity_random_per_filter": list(0.15 + 0.02 * rng.normal(size=128)),
                           "selectivity_references": {"random": 0.15, "gabor": 0.7}})
  return {"F2": f2, "F3": f3, "F4": f4, "F5": f5}


# Planted effects: (test score quality, curve time constant) per init label.
EFFECTS = {"random": (1.0, 40.0), "pretrained": (1.0, 10.0), "meanvar": (1.0, 20.0), "slim": (1.0, 10.0),
           "gabor_low": (1.0, 20.0), "gabor_high": (1.0, 40.0), "transfuse:conv1": (1.0, 12.0),
           "transfuse:block1": (1.0, 10.0)}


def make_study(test, dataset="synthetic_retina", seeds=3, experiments=None, effects=None, small_gain=0.3):
  out = test.create_tempdir().full_path
  src = os.path.join(out, "src.h5")
  open(src, "w").close()
  cfg = plan.StudyConfig(out=out, base=_base(dataset), models=("resnet50", "cbr_small"), seeds=seeds,
                         experiments=experiments or tuple(registry.selectable_ids()), small_data_subset=100,
                         wt_stages=("none", "conv1", "block1"), source_weights=src, curve_area_steps=100)
  if dataset != "synthetic_retina":
    cfg = dataclasses.replace(cfg, experiments=tuple(e for e in cfg.experiments if e != "T1"))
  runs = plan.plan_runs(cfg, catalog.experiments())
  task = data_registry.task_spec(dataset)
  effects = dict(EFFECTS, **(effects or {}))
  for r in runs:
    quality, speed = effects.get(r.init, (1.0, 40.0))
    if r.subset and r.init == "pretrained":
      quality += small_gain
    fake_run(plan.run_dir(cfg, r), task, r, quality, speed)
  ctx = common.load_context(cfg, runs, fake_analyses(cfg, runs))
  return cfg, runs, ctx


def readings_of(ctx, exp_id):
  return registry.get(exp_id).readings(ctx)


class RegistryTest(tf.test.TestCase):

  def test_every_experiment_runs_on_hand_made_results(self):
    ids = [e.id for e in catalog.experiments()]
    self.assertEqual(ids, ["T1", "T2", "T3", "convergence", "F2", "F3", "F4", "F5", "MV", "WT", "SL", "GB"])
    for dataset in ("synthetic_retina", "synthetic_cxr"):
      cfg, runs, ctx = make_study(self, dataset)
      for exp in catalog.experiments():
        with self.subTest(exp=exp.id, dataset=dataset):
          self.assertTrue(all(isinstance(r, tuple) and len(r) == 3 for r in exp.runs(cfg)))
          lines = exp.section(ctx)
          self.assertNotEmpty(lines)
          self.assertTrue(all(isinstance(l, str) for l in lines))
          for v in exp.readings(ctx):
            self.assertIn(v.verdict, VERDICTS)
            self.assertIn(v.rule, stats.RULES)
            self.assertNotEmpty(v.text)

  def test_register_twice_is_refused(self):
    with self.assertRaises(ValueError):
      registry.register(registry.get("T1"))

  def test_init_seeds_override_the_seed_count_per_init_label(self):
    cfg = plan.StudyConfig(out="/x", base=_base(), models=("cbr_tiny",), inits=("random", "pretrained", "meanvar"),
                           seeds=3, init_seeds={"random": 5, "meanvar": 2}, experiments=("T1",))
    runs = plan.plan_runs(cfg, catalog.experiments())
    count = {i: sorted(r.seed for r in runs if r.init == i) for i in cfg.inits}
    self.assertEqual(count, {"random": [0, 1, 2, 3, 4], "pretrained": [0, 1, 2], "meanvar": [0, 1]})
    self.assertEqual(cfg.describe_seeds(), "3 seed(s) (meanvar 2, random 5)")
    self.assertEqual(sorted(plan.arm_seed_counts(runs)), [2, 3, 5])
    with self.assertRaisesRegex(UsageError, r"--study_init_seeds=random=0: need at least 1 seed"):
      plan.plan_runs(dataclasses.replace(cfg, init_seeds={"random": 0}), catalog.experiments())

  def test_unknown_experiment_is_one_usage_error(self):
    with self.assertRaisesRegex(UsageError, "unknown ids"):
      plan.plan_runs(plan.StudyConfig(out="/x", base=_base(), experiments=("T9",)), catalog.experiments())


class ReadingsTest(tf.test.TestCase):
  """Each claim reaches holds, does not hold and inconclusive from planted effects."""

  def _verdicts(self, exp_id, model=None, **kw):
    _, _, ctx = make_study(self, **kw)
    return [v.verdict for v in readings_of(ctx, exp_id) if model is None or v.text.startswith(model)]

  def test_t1_equivalence(self):
    self.assertEqual(self._verdicts("T1", "cbr_small"), ["holds"])
    self.assertEqual(self._verdicts("T1", "cbr_small", effects={"pretrained": (1.6, 10.0)}), ["does not hold"])
    self.assertEqual(self._verdicts("T1", "cbr_small", seeds=1), ["inconclusive"])

  def test_t3_direction(self):
    self.assertEqual(self._verdicts("T3", "cbr_small", small_gain=0.5), ["holds"])
    self.assertEqual(self._verdicts("T3", "cbr_small", small_gain=-0.5), ["does not hold"])
    self.assertEqual(self._verdicts("T3", "cbr_small", seeds=1), ["inconclusive"])

  def test_mv_faster(self):
    self.assertEqual(self._verdicts("MV", "cbr_small"), ["holds"])
    self.assertEqual(self._verdicts("MV", "cbr_small", effects={"meanvar": (1.0, 40.0)}), ["does not hold"])
    self.assertEqual(self._verdicts("MV", "cbr_small", seeds=1), ["inconclusive"])

  def test_transfer_faster_than_random(self):
    self.assertEqual(self._verdicts("convergence", "cbr_small"), ["holds"])
    self.assertEqual(self._verdicts("convergence", "cbr_small", effects={"pretrained": (1.0, 40.0)}),
                     ["does not hold"])
    self.assertEqual(self._verdicts("convergence", "cbr_small", seeds=1), ["inconclusive"])

  def test_convergence_can_be_named_and_plans_its_runs(self):
    cfg = plan.StudyConfig(out="/x", base=_base(), models=("cbr_tiny",), inits=("meanvar",), seeds=2,
                           experiments=("convergence",))
    self.assertEqual({r.init for r in plan.plan_runs(cfg, catalog.experiments())}, {"meanvar", "random", "pretrained"})

  def test_wt_gb_sl(self):
    self.assertEqual(self._verdicts("WT", "cbr_small"), ["holds"])
    self.assertEqual(self._verdicts("WT", "cbr_small", effects={"transfuse:conv1": (1.0, 38.0)}), ["does not hold"])
    # gabor_high as fast as random: refuted, since the CI rules out a speed-up of the 0.05 margin.
    self.assertEqual(self._verdicts("GB", "cbr_small"), ["holds", "does not hold"])
    # Slower still (time constant 60 of a 400-step budget), gabor_high's runs rise by about 0.9 points over their
    # last half, above the 0.5 a plateau may: no plateau shown, so the refutation is not read.
    slow = [v for v in readings_of(make_study(self, effects={"gabor_high": (1.0, 60.0)})[2], "GB")
            if v.text.startswith("cbr_small")]
    self.assertEqual([(v.verdict, v.raw_verdict) for v in slow],
                     [("holds", None), ("inconclusive", "does not hold")])
    self.assertIn("cbr_small/gabor_high/seed2 no plateau shown", slow[1].text)
    self.assertEqual(self._verdicts("GB", "cbr_small", seeds=1), ["inconclusive", "inconclusive"])
    self.assertEqual(self._verdicts("SL"), ["holds", "holds"])
    self.assertEqual(self._verdicts("SL", seeds=1), ["inconclusive", "inconclusive"])

  def test_representation_readings(self):
    _, _, ctx = make_study(self, seeds=4)  # F2's disjoint pairs: 4 pretrained-random and 2 random-random.
    f2 = {v.text.split(":")[0]: v.verdict for v in readings_of(ctx, "F2")}
    self.assertEqual(f2["resnet50"], "holds")  # Below the baseline by 0.2 with small noise.
    self.assertEqual(f2["cbr_small"], "does not hold")  # A 0.2 gap is outside the ±0.05 margin.
    self.assertEqual([v.verdict for v in readings_of(ctx, "F3")], ["holds"] * 4)
    f4 = [v.verdict for v in readings_of(ctx, "F4")]
    self.assertEqual(f4, ["holds"] * 4)
    f5 = [v.verdict for v in readings_of(ctx, "F5")]
    self.assertEqual(f5, ["holds", "holds", "holds"])
    ctx.analyses["F4"]["panels"][0]["r2_ci"] = None
    self.assertEqual(readings_of(ctx, "F4")[0].verdict, "inconclusive")
    ctx.analyses["F4"]["panels"][0]["r2_ci"] = [0.1, 0.3]
    self.assertEqual(readings_of(ctx, "F4")[0].verdict, "does not hold")

  def test_f3_stage_order_comes_from_the_model(self):
    _, _, ctx = make_study(self)
    for r in ctx.analyses["F3"]["runs"]:  # A dict reloaded with sorted keys must not change the reading.
      r["similarity"] = dict(sorted(r["similarity"].items()))
    texts = [v.text for v in readings_of(ctx, "F3")]
    self.assertTrue(texts[0].startswith("resnet50: the paper: the lowest layers stay closest to init"), texts[0])
    self.assertIn("conv1 SVCCA to own init minus the mean of the stages above", texts[0])

  def test_f3_control_refutes_a_margin_any_init_would_give(self):
    _, _, ctx = make_study(self)
    rng = np.random.default_rng(3)
    for r in ctx.analyses["F3"]["runs"]:  # The unrelated init is as close as the own init: no init-specific effect.
      if r["kind"] == "unrelated_init":
        own = next(o for o in ctx.analyses["F3"]["runs"] if o["kind"] == "random" and o["run"] == r["run"])
        r["similarity"] = {s: v + 0.002 * rng.normal() for s, v in own["similarity"].items()}
    first = readings_of(ctx, "F3")[0]
    self.assertEqual(first.verdict, "does not hold")
    self.assertIn("control", first.text)

  def test_runs_still_improving_or_not_learned_make_trained_claims_inconclusive(self):
    _, runs, ctx = make_study(self, effects={"pretrained": (1.6, 10.0)})
    self.assertEqual(self._verdicts("T1", "cbr_small", effects={"pretrained": (1.6, 10.0)}), ["does not hold"])
    run = next(r for r in runs if r.model == "cbr_small" and r.init == "random" and r.subset is None)
    res = ctx.results[run]
    rising = [dict(p, **{ctx.primary: 0.5 + 0.001 * p["step"]}) for p in res.curve]  # Still rising at the end.
    res.curve[:] = rising
    res.result["selected"]["step"] = rising[-1]["step"]
    self.assertEqual(common.run_marks(ctx, res), ["still improving"])
    t1 = [v for v in readings_of(ctx, "T1") if v.text.startswith("cbr_small")][0]
    self.assertEqual(t1.verdict, "inconclusive")
    self.assertEqual(t1.raw_verdict, "does not hold")
    self.assertIn("cbr_small/random/seed0 still improving", t1.text)
    # A run whose test scores carry no signal did not learn: its CI contains 0.5.
    _, runs, ctx = make_study(self, effects={"random": (0.0, 40.0)})
    res = ctx.results[next(r for r in runs if r.model == "cbr_small" and r.init == "random" and r.subset is None)]
    self.assertEqual(common.run_marks(ctx, res), ["did not learn"])
    t1 = [v for v in readings_of(ctx, "T1") if v.text.startswith("cbr_small")][0]
    self.assertEqual((t1.verdict, t1.raw_verdict), ("inconclusive", "does not hold"))
    self.assertIn("did not learn", t1.text)
    q5 = answer.q5(ctx, [("T1", t1)])
    self.assertIn("did not learn; [runs table](#runs))", q5)
    self.assertIn("Give a run that did not learn another learning rate", q5)
    self.assertNotIn("Train them until the plateau stop", q5)

  def test_a_budget_stopped_run_must_show_its_plateau(self):
    _, runs, ctx = make_study(self)
    res = ctx.results[next(r for r in runs if r.model == "cbr_small" and r.init == "random" and r.subset is None)]
    self.assertEqual(common.run_marks(ctx, res), [])  # Flat within 0.05 points over its last 9 evaluations.

    def marks(values, every=50, **stopped):
      res.curve[:] = [{"step": every * i, ctx.primary: v} for i, v in enumerate(values)]
      res.result["selected"]["step"] = every * int(np.argmax(values))
      res.result["stopped"] = dict(stopped) if stopped else None
      return common.run_marks(ctx, res)

    # The demo's cbr_small/random/seed1: 5.5 points over its last 4 evaluations, but too noisy for the slope test.
    demo = [0.451, 0.544, 0.618, 0.644, 0.690, 0.693, 0.699]
    self.assertEqual(marks(demo), ["no plateau shown"])
    self.assertEqual(marks(demo, reason="plateau", step=300), [])  # The plateau stop ended it: its rule decided.
    self.assertEqual(marks([0.45, 0.60, 0.70, 0.69, 0.695, 0.685, 0.69]), [])  # Best before the last half: a plateau.
    self.assertEqual(marks([0.5, 0.6, 0.7, 0.71]), ["no plateau shown"])  # 2 evaluations in the half: nothing shown.
    flat = [0.5, 0.65] + [0.7 + 0.0004 * (-1) ** i + 0.00001 * i for i in range(14)]
    self.assertEqual(marks(flat), [])  # Flat within 0.5 points, and shown to be with 8 evaluations.
    rising = [0.5 + 0.01 * i for i in range(16)]
    self.assertEqual(marks(rising), ["still improving"])  # Implies 'no plateau shown', which is left out.
    t1 = [v for v in readings_of(ctx, "T1") if v.text.startswith("cbr_small")][0]
    self.assertEqual(t1.verdict, "inconclusive")
    self.assertIn("cbr_small/random/seed0 still improving", t1.text)
    marks(demo)
    t1 = [v for v in readings_of(ctx, "T1") if v.text.startswith("cbr_small")][0]
    self.assertEqual((t1.verdict, t1.raw_verdict), ("inconclusive", "holds"))
    self.assertIn("cbr_small/random/seed0 no plateau shown", t1.text)
    # The answer's Q5 names training before seeds while runs carry a mark, and says nothing of it otherwise.
    t1_readings = [("T1", v) for v in readings_of(ctx, "T1")]
    self.assertRegex(answer.q5(ctx, t1_readings),
                     rf"readings section\]\(#reading-the-results-against-the-paper\)\)\. First the runs: 1 of the "
                     rf"{len(ctx.results)} finished runs is marked \(1 no plateau shown; \[runs table\]\(#runs\)\), "
                     r"and the marks hold 1 of these readings open whatever the seeds\. Train them until the "
                     r"plateau stop ends them \(.*\)\. The seeds below")
    # The pilot plan says the same beside its seed counts.
    self.assertIn(f"Marked runs: 1 of the pilot's {len(ctx.results)} finished runs (1 no plateau shown;",
                  "\n".join(power.pilot_text(ctx, catalog.experiments())))
    marks([0.45, 0.60, 0.70, 0.69, 0.695, 0.685, 0.69])
    self.assertNotIn("First the runs", answer.q5(ctx, [("T1", v) for v in readings_of(ctx, "T1")]))
    self.assertNotIn("Marked runs", "\n".join(power.pilot_text(ctx, catalog.experiments())))
    # An exactly flat tail (scipy's stderr is nan there) shows its plateau; an exactly linear rise does not.
    self.assertEqual(marks([0.5, 0.6, 0.7] + [0.71] * 5), [])
    self.assertEqual(marks([0.5, 0.6, 0.7, 0.71, 0.72, 0.73, 0.74, 0.75], every=10), ["still improving"])
    self.assertTrue(common.no_plateau_shown(ctx, res))


class LabelMeanCovarianceTest(tf.test.TestCase):
  """auc_mean's test-set covariance: the labels' covariance on the images they share, and the old files' note."""

  def _runs(self, seeds=3, n=300):
    """RunResults of a CXR task with co-occurring, partly masked labels, scored by `seeds` runs on the same images,
    written as the trainer writes them; and the arrays behind them."""
    rng = np.random.default_rng(9)
    task = tasks.get_task("cxr", uncertainty_policy="ignore")
    patients = np.repeat(np.arange(n // 2), 2)
    latent = 0.9 * rng.normal(size=(n, 1)) + 0.45 * rng.normal(size=(n, 5))
    labels = (latent > 0.3).astype(np.float32)
    masks = (rng.random((n, 5)) > 0.2).astype(np.float32)
    out, logits_all = [], []
    for seed in range(seeds):
      logits = latent + 0.8 * rng.normal(size=(n, 5))
      d = self.create_tempdir().full_path
      inputs = metrics.auc_inputs(task, labels, masks, logits)
      rundir.save_test_predictions(d, inputs, metrics.auc_indices(task, masks, n), n, patients=patients)
      result = {"selected": {"test": metrics.compute_metrics(task, labels, masks, logits)}}
      out.append(common.RunResult(plan.Run("cbr_tiny", "random", seed), d, result, []))
      logits_all.append(logits)
    return out, labels, masks, np.stack(logits_all), patients

  def test_joint_covariance_holds_the_labels_covariance(self):
    results, labels, masks, logits, patients = self._runs()
    cov, note = common.joint_test_cov(results, "auc_mean")
    self.assertIsNone(note)
    # The same numbers assembled here from the arrays, not from the files.
    scores = 1.0 / (1.0 + np.exp(-np.transpose(logits, (0, 2, 1))))
    keys = [f"auc_{tasks.metric_key(p)}" for p in tasks.CXR_PATHOLOGIES]
    order = np.argsort(keys)  # label_matrices sorts the keys.
    means, expected = stats.delong_cov_mean(scores[:, order], labels.T[order], masks.T[order] > 0, patients)
    self.assertAllClose(cov, expected, rtol=1e-12, atol=0)
    self.assertAllClose(means, [res.test_metric("auc_mean") for res in results], rtol=0, atol=1e-12)
    # The old formula, labels as independent test sets, is smaller here: the labels co-occur.
    old = sum(stats.delong_auc(*res.predictions[k], clusters=res.patients(k))[1]
              for k, res in itertools.product(keys, results[:1])) / len(keys) ** 2
    self.assertGreater(cov[0, 0], 1.3 * old)
    value, var = results[0].auc_with_var("auc_mean")
    self.assertEqual(value, results[0].test_metric("auc_mean"))
    self.assertAllClose(var, cov[0, 0], rtol=1e-12, atol=0)
    self.assertIsNone(results[0].labels_note("auc_mean"))
    iv = common.runs_contrast([results], [1.0], "auc_mean")
    self.assertEqual(iv.note, "")
    self.assertNotIn("independent", common.fmt_interval(iv))

  def test_old_run_dirs_without_image_indices_fall_back_and_say_so(self):
    results, _, _, _, _ = self._runs()
    keys = sorted(results[0].predictions)
    # Files from before the per-label image indices predate the patient ids too: each image its own cluster.
    old = sum(stats.delong_cov(np.stack([res.predictions[k][0] for res in results]), results[0].predictions[k][1])[1]
              for k in keys) / len(keys) ** 2
    stripped = []
    for res in results:
      path = os.path.join(res.dir, rundir.TEST_PREDICTIONS)
      with np.load(path) as z:
        kept = {k: z[k] for k in z.files if not k.endswith(".index") and k != rundir.PATIENT_KEY}
      rundir.atomic_write_npz(path, kept)
      stripped.append(common.RunResult(res.run, res.dir, res.result, []))
    cov, note = common.joint_test_cov(stripped, "auc_mean")
    self.assertEqual(note, common.INDEPENDENT_LABELS)
    self.assertAllClose(cov, old, rtol=1e-12, atol=0)
    self.assertEqual(stripped[0].labels_note("auc_mean"), common.INDEPENDENT_LABELS)
    self.assertAllClose(stripped[0].auc_with_var("auc_mean")[1], old[0, 0], rtol=1e-12, atol=0)
    iv = common.runs_contrast([stripped], [1.0], "auc_mean")
    self.assertIsNotNone(iv.lo)
    self.assertIn(common.INDEPENDENT_LABELS, common.fmt_interval(iv))
    self.assertIn(common.INDEPENDENT_LABELS, stats.read_direction(iv, what="x").text)

  def test_runs_on_different_images_have_no_covariance(self):
    results, _, _, _, _ = self._runs(seeds=2)
    other, _, _, _, _ = self._runs(seeds=1, n=302)
    cov, why = common.joint_test_cov([results[0], other[0]], "auc_mean")
    self.assertIsNone(cov)
    self.assertIn("different", why)
    iv = common.runs_contrast([[results[0]], [other[0]]], [1.0, -1.0], "auc_mean")
    self.assertIsNone(iv.lo)


class ReportTest(tf.test.TestCase):

  def test_source_line_flags_a_source_below_the_target(self):
    _, _, ctx = make_study(self)
    for model, top1 in (("resnet50", 0.178), ("cbr_small", 0.466)):  # 10x chance of 32 classes: 31.25%.
      os.makedirs(plan.pretrain_dir(ctx.cfg, model))
      files.atomic_write_json(os.path.join(plan.pretrain_dir(ctx.cfg, model), "result.json"),
                              {"final": {"accuracy": top1, "top5_accuracy": 0.6}})
    line = report._source_line(ctx, {"resnet50": "pretrain", "cbr_small": "pretrain"})  # pylint: disable=protected-access
    resnet, cbr = line.split("; cbr_small: ")
    self.assertIn("source top-1 17.8%", resnet)
    self.assertIn("below 10x chance: a weak stand-in", resnet)
    self.assertIn("source top-1 46.6%", cbr)
    self.assertNotIn("weak stand-in", cbr)

  def test_report_sections_rules_and_rerun(self):
    cfg, runs, ctx = make_study(self)
    manifests = {"F2": {"runs": [{"name": runs[0].name, "step": 100, "result": "x"}]}}
    path = report.write_report(ctx, catalog.experiments(), manifests, {"resnet50": "x.h5"}, wall_seconds=60)
    text = open(path).read()
    for heading in ("## T1", "## T3", "## Convergence", "## F2", "## F4", "## MV", "## WT", "## SL", "## GB",
                    "## Reading the results against the paper", "Test protocol", "Inputs: resnet50/"):
      self.assertIn(heading, text)
    self.assertIn("Margin: ±1.0 AUC points", text)
    for rule in ("equivalence", "direction", "threshold"):
      self.assertEqual(text.count(f"- **{rule}**:"), 1, rule)
    for name in ("table_t1.csv", "table_t3.csv", "table_convergence.csv", "analysis/mv_cbr_small.png",
                 "analysis/wt_areas_resnet50.png", "analysis/gb_cbr_small.png", "analysis/sl.png"):
      self.assertTrue(os.path.exists(os.path.join(cfg.out, name)), name)
    again = open(report.write_report(ctx, catalog.experiments(), manifests, {"resnet50": "x.h5"},
                                     wall_seconds=61)).read()
    strip = lambda t: [l for l in t.splitlines() if "Wall time" not in l]  # noqa: E731
    self.assertEqual(strip(text), strip(again))

  def test_bounded_quantities_clip_their_ci_to_the_range(self):
    # Two seeds near the ceiling: t at 1 df (12.7) takes the upper end past an AUC of 1.
    wide = stats.Interval(mean=0.99, std=0.02, lo=0.80, hi=1.17, n=2, df=1.0)
    self.assertEqual(common.fmt_interval(wide), "99.0 ± 2.0 [80.0, 117.0]")
    self.assertEqual(common.fmt_interval(wide, bounds=common.AUC_BOUNDS), "99.0 ± 2.0 [80.0, 100.0]")
    diff = stats.Interval(mean=-0.9, std=None, lo=-1.4, hi=-0.4, n=4, df=2.0)
    self.assertEqual(common.fmt_interval(diff, signed=True, bounds=common.DIFF_BOUNDS), "-90.0 [-100.0, -40.0]")
    # The T1 table passes the bounds for its AUC cells and its difference.
    _, _, ctx = make_study(self)
    real = common.group_interval
    try:
      common.group_interval = lambda *a, **k: wide
      text = "\n".join(t1.section(ctx))
    finally:
      common.group_interval = real
    self.assertIn("[80.0, 100.0]", text)
    self.assertNotIn("117.0", text)

  def test_partial_study_reports_what_is_finished(self):
    cfg, runs, ctx = make_study(self, seeds=2)
    for r in runs:
      if r.model == "cbr_small" and r.init == "pretrained":
        del ctx.results[r]
    ctx.analyses = {}
    text = open(report.write_report(ctx, catalog.experiments(), {}, {}, wall_seconds=1)).read()
    self.assertIn("Missing (left out): ", text)
    self.assertIn("cbr_small/pretrained/seed0", text)


class AnswerTest(tf.test.TestCase):
  """The report's first section (experiments/answer.py) on hand-made results."""

  def _answers(self, **kw):
    _, _, ctx = make_study(self, **kw)
    text = open(report.write_report(ctx, catalog.experiments(), {}, {}, wall_seconds=1)).read()
    self.assertLess(text.index("## The answer for this task"), text.index("## T1"))
    section = text[text.index("## The answer for this task"):text.index("## T1")]
    return {int(l[0]): l for l in section.splitlines() if l[:2] in ("1.", "2.", "3.", "4.", "5.")}

  def test_questions_reach_their_verdicts(self):
    a = self._answers()
    self.assertRegex(a[1], r"cbr_small: [^;]*\*\*holds\*\*")
    self.assertRegex(a[2], r"cbr_small: \+0\.\d+ \[[^]]+\], \*\*holds\*\*")
    self.assertIn("transfusing up to conv1 closes more than half the gap", a[3])
    self.assertIn("Mean-Var − random", a[3])
    # The least-changed stages with their CIs and F3's verdict on "the lowest stage stays closest to init".
    self.assertRegex(a[3], r"cbr_small: conv\d \d\.\d\d ± \d\.\d\d \[\d\.\d\d, \d\.\d\d\], [^;]*\('the lowest "
                     r"stage stays closest to init': \*\*(holds|does not hold|inconclusive)\*\*\)")
    self.assertRegex(a[4], r"(cbr_small/\w+ \([\d,]+ parameters.*is equivalent to the best arm|is the smallest model)")
    self.assertRegex(a[5], r"\d+ of \d+ readings are open")  # F2's random pairs with 3 seeds: one pair, no CI.
    a = self._answers(effects={"pretrained": (1.6, 40.0)})  # Transfer better at test, no faster.
    self.assertRegex(a[1], r"cbr_small: [^;]*\*\*does not hold\*\*")
    self.assertRegex(a[2], r"cbr_small: [^;]*\*\*does not hold\*\*")
    self.assertRegex(a[4], r"(No smaller arm|is equivalent to the best arm|is the smallest model)")
    a = self._answers(seeds=1)
    self.assertRegex(a[1], r"cbr_small: [^;]*\*\*inconclusive\*\*")
    self.assertRegex(a[5], r"\d+ of \d+ readings are open")
    self.assertIn("--study_stage=plan --pilot=", a[5])

  def test_cheapest_arm(self):
    _, _, ctx = make_study(self)
    for r, res in ctx.results.items():  # ResNet50 a tenth of a point better: the best arm is a ResNet50 one.
      if r.model == "resnet50":
        res.result["selected"]["test"]["auc_referable"] += 0.001
    text = answer.q4(ctx, {})
    self.assertRegex(text, r"^cbr_small/\w+ \(33,921 parameters.*is equivalent to the best arm resnet50/")
    self.assertIn("**holds**", text)
    for r, res in ctx.results.items():  # Now ResNet50 is 5 points better: no smaller arm is equivalent.
      if r.model == "resnet50":
        res.result["selected"]["test"]["auc_referable"] += 0.05
    self.assertRegex(answer.q4(ctx, {}), r"^No smaller arm is shown to be equivalent within ±1.0 points to the best "
                     r"arm resnet50/.*: cbr_small/\w+ [^;]*\*\*does not hold\*\*")

  def test_a_question_without_its_experiments_names_the_flag(self):
    a = self._answers(experiments=("T1",))
    self.assertIn("--experiments=...,WT", a[3])
    self.assertIn("--experiments=...,F3", a[3])


class DurationTest(tf.test.TestCase):

  def test_seconds_under_a_minute_minutes_above(self):
    self.assertEqual([report.duration(x) for x in (2.4, 59.4, 59.6, 851.0)], ["2 s", "59 s", "1.0 min", "14.2 min"])


class AnswerVerdictsTest(tf.test.TestCase):
  """Each question of the answer section reaches each of its outcomes on hand-made results: holds, does not hold,
  inconclusive, and not run (naming the flag) or planned but unfinished; the cost figures of Q4; --experiments=ANSWER."""

  def test_ceiling_is_named_not_missing_noise(self):
    class Run:  # A RunResult's test_metric only.
      def __init__(self, auc):
        self.auc = auc

      def test_metric(self, key):
        del key
        return self.auc

    iv = stats.contrast_interval([[1.0, 1.0], [1.0, 1.0]], [1.0, -1.0])
    self.assertEqual(iv.note, stats.ZERO_SPREAD)
    self.assertEqual(answer.at_ceiling(iv, [Run(1.0)] * 4, "auc_a").note, answer.CEILING)
    self.assertIn("at its ceiling", answer._ci(answer.at_ceiling(iv, [Run(1.0)] * 4, "auc_a")))
    # Equal but below 1 (no DeLong covariance given): the stats note stands; an interval that exists is untouched.
    self.assertEqual(answer.at_ceiling(iv, [Run(0.9)] * 4, "auc_a").note, stats.ZERO_SPREAD)
    wide = stats.contrast_interval([[0.9, 1.0], [1.0, 1.0]], [1.0, -1.0])
    self.assertIs(answer.at_ceiling(wide, [Run(1.0)] * 4, "auc_a"), wide)
    self.assertIsNone(answer.at_ceiling(None, [Run(1.0)], "auc_a"))

  def test_open_readings_have_names_that_tell_them_apart(self):
    reading = lambda text: stats.Verdict(stats.INCONCLUSIVE, text, "direction")
    readings = [("T2", reading("cbr_tiny: mean test AUC transfer − random (the paper: within about 1 point): d")),
                ("T2", reading("resnet50: mean test AUC transfer − random (the paper: within about 1 point): d")),
                ("F3", reading("cbr_tiny: the paper: the lowest layers stay closest to init (4 runs): conv1 d")),
                ("F3", reading("cbr_tiny: the paper: the pretrained − random gap is positive: conv1 d")),
                ("F3", reading("resnet50: the paper: the lowest layers stay closest to init (4 runs): conv1 d"))]
    self.assertEqual(answer.reading_labels(readings), [
        "T2 cbr_tiny", "T2 resnet50", "F3 cbr_tiny: the paper: the lowest layers stay closest to init (4 runs)",
        "F3 cbr_tiny: the paper: the pretrained − random gap is positive", "F3 resnet50"])

  def test_best_arm_breaks_ties_by_size_and_names_them(self):
    iv = lambda m: stats.Interval(m, None, None, None, 2, None, None, 0.95, stats.FEW_SEEDS)
    cost = {("big", "random"): {"params": 900}, ("big", "pretrained"): {"params": 900},
            ("tiny", "random"): {"params": 10}, ("tiny", "pretrained"): {"params": 10}}
    level = {("big", "random"): iv(1.0), ("big", "pretrained"): iv(1.0), ("tiny", "random"): iv(0.8),
             ("tiny", "pretrained"): iv(1.0)}
    self.assertEqual(answer.best_arm(level, cost),
                     (("tiny", "pretrained"), [("big", "random"), ("big", "pretrained")]))
    # The order of the arms does not change the answer.
    self.assertEqual(answer.best_arm(dict(reversed(list(level.items()))), cost)[0], ("tiny", "pretrained"))
    # A clear best keeps its place whatever its size.
    level[("big", "random")] = iv(1.0 + 1e-3)
    self.assertEqual(answer.best_arm(level, cost), (("big", "random"), []))

  @staticmethod
  def _drop(ctx, inits, planned):
    """ctx without the finished runs of `inits` (still in the plan when `planned`, else not planned either)."""
    ctx = dataclasses.replace(ctx, results={r: v for r, v in ctx.results.items() if r.init not in inits})
    return ctx if planned else dataclasses.replace(ctx, runs=[r for r in ctx.runs if r.init not in inits])

  def test_refuted_inconclusive_and_not_run(self):
    slow = {"pretrained": (1.6, 40.0), "transfuse:conv1": (1.0, 40.0), "transfuse:block1": (1.0, 40.0)}
    _, _, ctx = make_study(self, effects=slow, experiments=("T1", "MV", "WT"))
    self.assertRegex(answer.q1(ctx, {}), r"cbr_small: [^;]*\*\*does not hold\*\*")
    self.assertRegex(answer.q2(ctx, {}), r"cbr_small: [^;]*\*\*does not hold\*\*")
    q3 = answer.q3(ctx, {})
    self.assertRegex(q3, r"cbr_small: no transfused prefix closes more than half the gap \(up to conv1: [^)]+\), "
                     r"\*\*does not hold\*\*")
    # Transfer no faster than random: the share's denominator may be 0, so Fieller's interval is unbounded.
    self.assertRegex(q3, r"cbr_small: Mean-Var − random [^;]*share \*\*inconclusive\*\*: its 95% CI is unbounded")
    self.assertNotRegex(q3, r"share -?\d")  # No bare ratio of means when its interval is unbounded.
    self.assertIn("Least changed stages: not run: F3 (add it with `--experiments=...,F3`, or `--experiments=ANSWER`",
                  q3)
    # F3 selected but its analysis not computed yet (runs unfinished): said so, not "not run".
    waiting = dataclasses.replace(ctx, cfg=dataclasses.replace(ctx.cfg, experiments=("T1", "MV", "WT", "F3")),
                                  analyses={})
    self.assertIn("Least changed stages: no F3 analysis yet (it runs once the pretrained and random runs are "
                  "finished).", answer.q3(waiting, {}))
    # The questions whose runs the study did not plan name the flag; planned but unfinished ones say so.
    for planned, expected in ((False, "not run: random and pretrained runs of one model (add it with "
                                      "`--study_inits=random,pretrained`, or `--experiments=ANSWER`"),
                              (True, "no finished runs yet: random and pretrained runs of one model are planned")):
      bare = self._drop(ctx, ("pretrained",), planned)
      self.assertStartsWith(answer.q1(bare, {}), expected)
      self.assertStartsWith(answer.q2(bare, {}), expected)
    self.assertIn("Mean-Var's share of the speed-up, (Mean-Var − random) / (transfer − random) of normalised curve "
                  "areas, the part that weight scale rather than features gives, with Fieller's 95% CI for a ratio of "
                  "means over seeds: not run: Mean-Var runs (add it with `--experiments=...,MV`",
                  answer.q3(self._drop(ctx, ("meanvar",), False), {}))
    self.assertIn("no finished runs yet: Mean-Var runs are planned",
                  answer.q3(self._drop(ctx, ("meanvar",), True), {}))
    unfinished_wt = self._drop(ctx, ("transfuse:conv1", "transfuse:block1"), True)
    self.assertIn("no finished runs yet: weight transfusion runs are planned", answer.q3(unfinished_wt, {}))
    self.assertStartsWith(answer.q4(self._drop(ctx, ("random", "pretrained", "meanvar"), False), {}),
                          "not run: random or pretrained runs")
    self.assertIn("weight transfusion runs (add it with `--experiments=...,WT`",
                  answer.q3(dataclasses.replace(ctx, cfg=dataclasses.replace(ctx.cfg, experiments=("T1",))), {}))
    # One seed per arm: every reading is inconclusive, the share has no CI, Q4's smaller arms are inconclusive.
    _, _, one = make_study(self, seeds=1, experiments=("T1", "MV", "WT"))
    for r, res in one.results.items():  # ResNet50 a tenth of a point better: Q4 reads the smaller CBR arms.
      if r.model == "resnet50":
        res.result["selected"]["test"]["auc_referable"] += 0.001
    self.assertRegex(answer.q1(one, {}), r"cbr_small: [^;]*\*\*inconclusive\*\*")
    self.assertRegex(answer.q2(one, {}), r"cbr_small: [^;]*\*\*inconclusive\*\*")
    q3 = answer.q3(one, {})
    self.assertRegex(q3, r"cbr_small: no transfused prefix is shown to close more than half the gap .*"
                     r"\*\*inconclusive\*\*")
    self.assertIn(f"(no CI: {stats.FEW_SEEDS})", q3)
    self.assertRegex(answer.q4(one, {}), r"^No smaller arm is shown to be equivalent within ±1\.0 points to the best "
                     r"arm resnet50/\w+ .*: cbr_small/\w+ [^;]*\*\*inconclusive\*\*")

  def test_mean_var_share_is_fieller_on_the_curve_areas(self):
    _, _, ctx = make_study(self, experiments=("T1", "MV"))
    groups = [common.normalized_area_group(ctx, "cbr_small", i)[0] for i in ("random", "meanvar", "pretrained")]
    iv = answer.mv_share(ctx, "cbr_small")
    self.assertEqual(iv, stats.share_interval(*groups))
    self.assertBetween(iv.mean, 0.3, 0.9)  # Time constants 40 (random), 20 (Mean-Var), 10 (transfer).
    self.assertLess(iv.lo, iv.mean)
    self.assertIn(f"cbr_small: Mean-Var − random", answer.q3(ctx, {}))
    self.assertIn(f"share {iv.mean:.2f} [{iv.lo:.2f}, {iv.hi:.2f}]", answer.q3(ctx, {}))

  def test_cheapest_arm_gives_the_recorded_costs_beside_the_best_arms(self):
    _, _, ctx = make_study(self, experiments=("T1",))
    recorded = {"resnet50": (1_000_000, 2_500_000_000, 40.0, 150.0), "cbr_small": (30_000, 4_000_000, 500.0, 2000.0)}
    for r, res in ctx.results.items():
      params, flops, train, infer = recorded[r.model]
      res.result["cost"] = {"params": params, "macs_per_image": flops // 2, "flops_per_image": flops,
                            "image_size": [32, 32], "train_images_per_second": train + r.seed,
                            "inference_images_per_second": infer - r.seed, "device": "CPU: test"}
      if r.model == "resnet50":  # The best arm is a ResNet50 one.
        res.result["selected"]["test"]["auc_referable"] += 0.001
    text = answer.q4(ctx, {})
    self.assertRegex(text, r"^cbr_small/\w+ \(30,000 parameters, 4\.0 MFLOPs per image, 501 training and 1,999 "
                     r"inference img/s\) is equivalent to the best arm resnet50/\w+ \([\d.]+ test AUC, 1,000,000 "
                     r"parameters, 2\.50 GFLOPs per image, 41 training and 149 inference img/s\): difference .* "
                     r"\*\*holds\*\*")
    self.assertIn("Costs at 32 px: FLOPs are 2 × the multiply-adds", text)
    # Runs from before the cost record: FLOPs counted from the model, training speed estimated, inference unknown.
    for res in ctx.results.values():
      del res.result["cost"]
      res.result["global_batch"] = 8
    text = answer.q4(ctx, {})
    flops = common.model_cost(ctx.cfg, "cbr_small")["flops_per_image"]
    self.assertIn(f"33,921 parameters, {flops / 1e6:.1f} MFLOPs per image, ≈3,200 training img/s (evaluations "
                  "included), inference speed not recorded", text)  # 400 steps x 8 images in 1 s.

  def test_q5_counts_the_readings_the_readings_section_leaves_open(self):
    _, _, ctx = make_study(self, seeds=3)
    text = open(report.write_report(ctx, catalog.experiments(), {}, {}, wall_seconds=1)).read()
    k, n = map(int, re.search(r"^readings: (\d+) of (\d+) conclusive$", text, re.M).groups())
    open_, total = map(int, re.search(r"(\d+) of (\d+) readings are open after the family-wise", text).groups())
    self.assertEqual((open_, total), (n - k, n))
    self.assertGreater(k, 0)  # Some decided, some open: the counts are not trivially equal.

  def test_q5_lists_what_each_open_reading_needs(self):
    iv = stats.diff_interval([0.80, 0.81, 0.79], [0.795, 0.80, 0.805])
    open_ = stats.read_equivalence(iv, 0.001, what="cbr_small")
    self.assertEqual(open_.verdict, stats.INCONCLUSIVE)
    _, _, ctx = make_study(self, seeds=2, experiments=("T1",))
    text = answer.q5(ctx, [("T1", open_), ("T1", stats.read_equivalence(iv, 0.5, what="resnet50"))])
    self.assertRegex(text, r"^1 of 2 readings are open after the family-wise adjustment \(\[the readings section\]"
                     r"\(#reading-the-results-against-the-paper\)\)\. "
                     r".*T1 cbr_small: (\d+ seeds per arm|no number of seeds) at this study's test images, "
                     r"(\d+ seeds per arm|no number of seeds) at 10x\. `transfusion-study")
    self.assertEqual(answer.q5(ctx, [("T1", stats.read_equivalence(iv, 0.5, what="x"))]),
                     "Nothing: every reading is decided.")
    # Where no number can be given, Q5 says why: at the ceiling every run scores 1.000 and nothing is known.
    flat = stats.read_equivalence(stats.diff_interval([1.0, 1.0], [1.0, 1.0]), 0.01, what="resnet50")
    self.assertEqual(flat.verdict, stats.INCONCLUSIVE)
    self.assertIn(f"seeds needed unknown ({stats.ZERO_SPREAD})", answer.q5(ctx, [("T1", flat)]))
    r2 = stats.read_threshold(0.1, 0.9, 0.5, what="F4 resnet50")
    self.assertIn("seeds needed unknown (a bootstrap reading against a threshold has no seed variance",
                  answer.q5(ctx, [("F4", r2)]))
    self.assertStartsWith(answer.q5(ctx, []), "Nothing to settle yet: no readings were made")


class AnswerPresetTest(tf.test.TestCase):

  def test_answer_expands_to_the_experiments_the_questions_read(self):
    self.assertEqual(registry.expand(["ANSWER"]), ("T1", "T2", "F3", "MV", "WT"))
    self.assertEqual(registry.expand(["T3", "ANSWER", "MV"]), ("T3", "T1", "T2", "F3", "MV", "WT"))
    for exp_id in registry.PRESETS["ANSWER"]:
      self.assertIn(exp_id, registry.selectable_ids())
    cfg = plan.StudyConfig(out="/x", base=_base(), models=("cbr_tiny",), experiments=("ANSWER",),
                           wt_stages=("none", "conv1"))
    self.assertEqual(cfg.experiments, ("T1", "T2", "F3", "MV", "WT"))
    self.assertEqual(dataclasses.replace(cfg, seeds=2).experiments, cfg.experiments)
    inits = {r.init for r in plan.plan_runs(cfg, catalog.experiments())}
    self.assertEqual(inits, {"random", "pretrained", "meanvar", "transfuse:conv1"})
    with self.assertRaisesRegex(UsageError, r"unknown ids \['ANSWR'\].*or a preset: ANSWER"):
      plan.plan_runs(dataclasses.replace(cfg, experiments=("ANSWR",)), catalog.experiments())

  def test_a_study_of_answer_answers_every_question(self):
    _, _, ctx = make_study(self, experiments=("ANSWER",))
    text = open(report.write_report(ctx, catalog.experiments(), {}, {}, wall_seconds=1)).read()
    section = text[text.index("## The answer for this task"):text.index("## T1")]
    self.assertNotIn("not run", section)
    self.assertNotIn("no finished runs", section)
    for link in ("[T1]", "[convergence]", "[WT]", "[MV]", "[F3]"):
      self.assertIn(link, section)


class DamagedFilesTest(tf.test.TestCase):
  """A report never reads a run's files without checking them (issue 24, cases 4, 8, 10)."""

  def test_damaged_or_missing_files_make_the_run_unfinished_and_are_named(self):
    cfg, runs, _ = make_study(self, seeds=2, experiments=("T1",))
    victims = [r for r in runs if r.model == "cbr_small" and r.subset is None][:4]
    d = [plan.run_dir(cfg, r) for r in victims]
    os.remove(os.path.join(d[0], "test_predictions.npz"))  # Deleted: used to narrow the interval silently.
    with open(os.path.join(d[1], "test_predictions.npz"), "r+b") as f:
      f.truncate(100)  # Truncated: used to raise BadZipFile from the report.
    with open(os.path.join(d[2], "result.json"), "w") as f:
      f.write("{not json")  # Invalid: used to raise JSONDecodeError.
    with open(os.path.join(d[3], "curve.json"), "w") as f:
      f.write("[]x")
    ctx = common.load_context(cfg, runs)
    self.assertEqual(set(ctx.damaged), set(victims))
    for r in victims:
      self.assertNotIn(r, ctx.results)
    self.assertIn("test_predictions.npz is missing or damaged", ctx.damaged[victims[0]])
    self.assertIn("result.json is damaged: not valid JSON", ctx.damaged[victims[2]])
    self.assertIn("curve.json is not valid JSON", ctx.damaged[victims[3]])
    text = open(report.write_report(ctx, catalog.experiments(), {}, {}, wall_seconds=1)).read()
    for r in victims:
      self.assertIn(f"**Left out as unfinished:** {r.name}: ", text)
    cbr = [v for v in registry.get("T1").readings(ctx) if v.text.startswith("cbr_small")][0]
    self.assertEqual(cbr.verdict, "inconclusive")  # Both arms lost their runs: no interval, never a narrower one.


class StudyModelKwargsTest(tf.test.TestCase):

  def test_zero_init_residual_reaches_resnet50_runs_only(self):
    base = trainer.TrainConfig(dataset="synthetic_retina", image_size=48,
                               model_kwargs={"width_multiplier": 0.5, "zero_init_residual": True})
    cfg = plan.StudyConfig(out="/x", base=base, models=("cbr_small", "resnet50"),
                           width_multipliers={"resnet50": 0.25})
    self.assertEqual(cfg.model_kwargs("resnet50"), {"width_multiplier": 0.25, "zero_init_residual": True})
    self.assertEqual(cfg.model_kwargs("cbr_small"), {"width_multiplier": 0.5})
    # Both build: a CBR model given zero_init_residual would raise UsageError.
    for m in cfg.models:
      models.build_model(m, 5, (48, 48, 3), initialize_weights=False, **cfg.model_kwargs(m))

  def test_per_model_learning_rates_reach_their_runs_and_the_header(self):
    base = trainer.TrainConfig(dataset="synthetic_retina", image_size=48, learning_rate=0.002)
    cfg = plan.StudyConfig(out="/x", base=base, models=("cbr_small", "resnet50"), experiments=("T1",),
                           learning_rates={"resnet50": 0.004, "inceptionv3": 0.01})
    runs = plan.plan_runs(cfg, catalog.experiments())
    rates = {r.model: plan.run_config(cfg, r, "/w.h5").learning_rate for r in runs}
    self.assertEqual(rates, {"cbr_small": 0.002, "resnet50": 0.004})
    # A model outside --study_models is not named; an unknown one is refused.
    self.assertEqual(cfg.describe_learning_rates(), "0.002 (resnet50 0.004; adam, cosine)")
    with self.assertRaisesRegex(UsageError, r"--study_learning_rates names an unknown model 'resnet5'"):
      plan.plan_runs(dataclasses.replace(cfg, learning_rates={"resnet5": 0.1}), catalog.experiments())


class AnalysisImagesTest(tf.test.TestCase):

  def test_image_count_reaches_the_minimum_where_the_split_can(self):
    # The demo's ResNet50: quarter width at 48 px. block3 has 3 x 3 positions and 256 channels (285 images for 10
    # datapoints per neuron), block4 2 x 2 and 512 (1,280 images).
    def count(num_val, stages=None):
      base = trainer.TrainConfig(dataset="synthetic_retina", image_size=48,
                                 data_kwargs={} if num_val is None else {"num_val": num_val})
      cfg = plan.StudyConfig(out="/x", base=base, models=("resnet50",), width_multipliers={"resnet50": 0.25},
                             analysis_images=256, analysis_min_datapoints=10)
      return study.analysis_image_count(cfg, "resnet50", stages)
    self.assertEqual(count(2000), 1280)
    self.assertEqual(count(1000), 285)  # block4 cannot reach 10 per neuron: it does not raise the count.
    self.assertEqual(count(None), 1280)  # Split size unknown (real data): the split caps what is read.
    self.assertEqual(count(1000, ["conv1", "block1"]), 256)


class TimeEstimateTest(tf.test.TestCase):

  def test_the_estimate_counts_scoring_the_validation_and_test_splits(self):
    base = dataclasses.replace(_base(), train_steps=300, eval_every=50, batch_size=32,
                               data_kwargs={"num_val": 2000, "num_test": 5000})
    cfg = plan.StudyConfig(out=self.create_tempdir().full_path, base=base, models=("cbr_tiny",), seeds=2)
    runs = plan.plan_runs(cfg, catalog.experiments())
    sources = {"cbr_tiny": "pretrain"}
    # 0.1 s per train step, 1 s to trace, 0.05 s per forward-only batch: per run 300 x 0.1 + 7 evaluations x 63
    # validation batches x 0.05 + 157 test batches x 0.05 + 3 traces = 62.9 s.
    real = study.estimate_step_seconds
    try:
      study.estimate_step_seconds = lambda c, m: (0.1, 1.0, 0.05)
      without_pretraining = study.print_plan(cfg, runs, {}, runs, procs=2)
      self.assertAllClose(without_pretraining, len(runs) * 62.9 / 2, rtol=1e-9)
      # Without known split sizes each evaluation counts as 4 train steps, as before.
      bare = dataclasses.replace(cfg, base=dataclasses.replace(base, data_kwargs={}))
      self.assertAllClose(study.print_plan(bare, runs, {}, runs), len(runs) * (0.1 * (300 + 7 * 4) + 3), rtol=1e-9)
      self.assertGreater(study.print_plan(cfg, runs, sources, runs, procs=2), without_pretraining)
    finally:
      study.estimate_step_seconds = real


class WtStagesTest(tf.test.TestCase):

  def test_stages_read_bottom_up_from_random_whatever_the_flag_order(self):
    cfg = plan.StudyConfig(out="x", base=_base(), models=("resnet50",), wt_stages=("block1", "conv1", "nope"))
    self.assertEqual(plan.wt_stages(cfg, "resnet50"), ("none", "conv1", "block1"))
    # Without none in the flag, random init is still WT's first arm: its reading needs it.
    self.assertEqual(wt.labels_of(cfg, "resnet50"), ["random", "transfuse:conv1", "transfuse:block1", "pretrained"])
    cfg = dataclasses.replace(cfg, wt_stages=None)
    self.assertEqual(plan.wt_stages(cfg, "resnet50"), plan.default_wt_stages("resnet50"))
    # A name that is a stage of no model of the study is a typo, named before anything runs.
    bad = dataclasses.replace(cfg, wt_stages=("none", "conv_1"), experiments=("WT",))
    with self.assertRaisesRegex(UsageError, "--wt_stages names conv_1, a stage of none of --study_models"):
      plan.plan_runs(bad, catalog.experiments())
    plan.plan_runs(dataclasses.replace(bad, wt_stages=("none", "conv1", "all")), catalog.experiments())


class StudyChecksTest(tf.test.TestCase):
  """Bad study input is one UsageError before anything is written."""

  def _cfg(self, **kw):
    out = os.path.join(self.create_tempdir().full_path, "study")
    return dataclasses.replace(plan.StudyConfig(out=out, base=_base(), models=("cbr_tiny",)), **kw)

  def _refused(self, cfg, pattern, stage="all"):
    with self.assertRaisesRegex(UsageError, pattern):
      study.run_study(cfg, stage)
    if os.path.isdir(cfg.out):
      self.assertEmpty(os.listdir(cfg.out))

  def test_bad_inputs(self):
    self._refused(self._cfg(seeds=0), "study_seeds=0")
    self._refused(self._cfg(seeds=-1), "study_seeds=-1")
    self._refused(self._cfg(inits=("random", "bogus")), "unknown init 'bogus'")
    self._refused(self._cfg(models=("vgg16",)), "--study_models has an unknown model 'vgg16'")
    self._refused(self._cfg(base=dataclasses.replace(_base(), image_size=8)), "image_size=8")
    self._refused(self._cfg(), "holds no study", stage="report")
    cfg = self._cfg()
    open(cfg.out, "w").close()
    with self.assertRaisesRegex(UsageError, "existing file"):
      study.run_study(cfg)

  def test_a_source_pretrained_with_other_settings_is_refused(self):
    cfg = self._cfg(source_weights="synthetic", inits=("random", "pretrained"), experiments=("T1",))
    folder = plan.pretrain_dir(cfg, "cbr_tiny")
    os.makedirs(folder)
    old = dataclasses.replace(plan.pretrain_config(cfg, "cbr_tiny"), train_steps=cfg.pretrain_steps + 1)
    files.atomic_write_json(os.path.join(folder, "config.json"), {"train": old.to_dict()})
    open(plan.pretrained_path(cfg, "cbr_tiny"), "w").close()
    before = sorted(os.listdir(cfg.out))
    with self.assertRaisesRegex(UsageError, r"holds cbr_tiny's synthetic source pretrained with other settings "
                                r"\(train_steps differ\); pass --force"):
      study.run_study(cfg)
    self.assertEqual(sorted(os.listdir(cfg.out)), before)  # Nothing written, nothing removed.
    # The same settings pass the check (and --force would redo the source).
    files.atomic_write_json(os.path.join(folder, "config.json"),
                            {"train": plan.pretrain_config(cfg, "cbr_tiny").to_dict()})
    study.check_inputs(cfg, plan.plan_runs(cfg, catalog.experiments()), {"cbr_tiny": "pretrain"})

  def test_missing_data_folder_is_refused_before_any_pretraining(self):
    base = dataclasses.replace(_base("retina_csv"), data_kwargs={"data_dir": "/nonexistent/fundus"})
    self._refused(self._cfg(base=base, source_weights="synthetic"), "/nonexistent/fundus")
