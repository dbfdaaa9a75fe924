"""F2: SVCCA similarity of the top two stages of trained networks: pretrained-vs-random pairs against the
random-vs-random baseline (pairs of different seeds).

Pairs are disjoint within a kind, so each pair is an independent unit: pretrained-vs-random pairs seed i of the
pretrained arm with seed i of the random arm, random-vs-random pairs seeds (0, 1), (2, 3), ... (n seeds per arm give
n and n // 2 pairs). The two kinds share random runs, so the two means are not independent of each other; the interval
over pairs treats them as independent [a stated approximation]. With n and n // 2 pairs the kinds' counts differ, so
diff_interval pairs them by position (Scheffe: pair j of each kind, stats.uses_pairing).

Claims read (the paper): for the large models (ResNet50, InceptionV3) pretrained-vs-random similarity is below the
random-vs-random baseline (a directional test with --similarity_margin as its margin); for the small CBRs there is
little difference (an equivalence test with --similarity_margin), on runs trained to a plateau. Pairs with a stage
below the minimum datapoints per neuron are left out of the readings.
"""
import dataclasses
import os

from transfusion_tf.analysis import representation as rep
from transfusion_tf.experiments import common, registry

LARGE = ("resnet50", "inceptionv3")


def runs(cfg):
  return [(m, init, None) for m in cfg.models for init in ("random", "pretrained")]


def analysis_runs(ctx):
  return ctx.finished(inits=("random", "pretrained"))


def pairs_of(ctx, finished, model):
  """[(run_a dir, run_b dir, kind)]: disjoint pairs within each kind (module docstring), by seed."""
  mine = [r for r in finished if r.model == model and r.subset is None]
  rnd = sorted((r for r in mine if r.init == "random"), key=lambda r: r.seed)
  pre = sorted((r for r in mine if r.init == "pretrained"), key=lambda r: r.seed)
  d = lambda r: ctx.results[r].dir  # noqa: E731
  return ([(d(p), d(r), "pretrained_vs_random") for p, r in zip(pre, rnd)]
          + [(d(rnd[i]), d(rnd[i + 1]), "random_vs_random") for i in range(0, len(rnd) - 1, 2)])


def analysis(ctx, finished):
  data = {"figure": "F2", "pairs": []}
  for m in ctx.cfg.models:
    pairs = pairs_of(ctx, finished, m)
    if pairs:
      data["pairs"] += rep.f2_similarities(pairs, ctx.batches(m), **common.analysis_kwargs(ctx.cfg))["pairs"]
  return rep.figure_f2(data, f"{ctx.adir}/f2") if data["pairs"] else None


def _key(run_dir):
  """A run folder by its place in the study (model/init/seed), so a moved or copied study still matches its cache."""
  return tuple(os.path.normpath(str(run_dir)).split(os.sep)[-3:])


def _usable(pair):
  return not any(v.get("below_min") for v in pair["per_stage"].values())


def similarities(ctx, model, kind):
  """Top-two-stage similarities of the usable pairs of `kind`, and their permutation baselines."""
  data = ctx.analyses.get("F2") or {}
  disjoint = {(_key(a), _key(b)) for a, b, _ in pairs_of(ctx, list(ctx.results), model)}
  pairs = [p for p in data.get("pairs", []) if p["model"] == model and p["kind"] == kind and _usable(p)
           and (_key(p.get("run_a")), _key(p.get("run_b"))) in disjoint]
  base = [sum((p["per_stage"][s].get("baseline") or {}).get("svcca") or 0.0 for s in p["stages"]) / len(p["stages"])
          for p in pairs]
  return [p["similarity"] for p in pairs], base


def section(ctx):
  data = ctx.analyses.get("F2")
  if not data:
    return ["Needs finished random and pretrained runs of one model."]
  header = ["model", "pretrained vs random", "random vs random", "permutation baseline", "pairs"]
  rows = []
  for m in ctx.cfg.models:
    pr, base = similarities(ctx, m, "pretrained_vs_random")
    rr, base_rr = similarities(ctx, m, "random_vs_random")
    base += base_rr
    rows.append([m, common.fmt_interval(common.t_iv(pr), scale=1, digits=3, bounds=common.AUC_BOUNDS),
                 common.fmt_interval(common.t_iv(rr), scale=1, digits=3, bounds=common.AUC_BOUNDS),
                 f"{sum(base) / len(base):.3f}" if base else "—", f"{len(pr)} + {len(rr)}"])
  return [common.figure_link(ctx, "F2", data["png"]), "",
          "Mean SVCCA of the top two stages ± std over disjoint pairs of runs [95% CI]; the permutation baseline is "
          "the same similarity with one side's datapoints shuffled (the bias floor of this many datapoints).", "",
          common.table(header, rows)]


def readings(ctx):
  out = []
  if not ctx.analyses.get("F2"):
    return out
  for m in ctx.cfg.models:
    pr, _ = similarities(ctx, m, "pretrained_vs_random")
    rr, _ = similarities(ctx, m, "random_vs_random")
    iv = common.diff_iv(rr, pr)
    if iv is not None and iv.lo is None:
      iv = dataclasses.replace(iv, note="fewer than 2 disjoint pairs of a kind: random-vs-random needs 4 random seeds")
    unit = "disjoint pairs of runs"
    if m in LARGE:
      verdict = common.read_direction(iv, what=(
          f"{m}: SVCCA random-vs-random minus pretrained-vs-random over {len(rr)} + {len(pr)} usable pairs (the "
          "paper: pretrained-vs-random lies below the baseline for large models)"),
          margin=common.direction_margin(ctx.cfg, "similarity"), unit=unit)
    else:
      verdict = common.read_equivalence(iv, ctx.cfg.similarity_margin, what=(
          f"{m}: SVCCA random-vs-random minus pretrained-vs-random over {len(rr)} + {len(pr)} usable pairs (the "
          "paper: little difference for small models)"), unit=unit)
    out.append(common.gate_trained(ctx, verdict, common.arm_runs(ctx, m, ("pretrained", "random"))))
  return out


EXPERIMENT = registry.register(registry.Experiment(
    id="F2", title="F2: similarity of the top two stages", runs=runs, section=section, readings=readings,
    analysis=analysis, analysis_runs=analysis_runs))
