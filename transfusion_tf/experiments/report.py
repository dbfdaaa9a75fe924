"""The study report: the paper's tables with our mean ± std beside the paper's numbers, the curve figures (MV, WT,
SL, GB), the representation figures (F2-F5) and an automatic, honest reading of each claim.

Each reading says "holds", "does not hold" or "inconclusive" with the numbers behind it. The rules are simple and
stated in the text, so a surprising result is visible rather than explained away.
"""
import csv
import datetime
import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from transfusion_tf import models
from transfusion_tf.data import tasks
from transfusion_tf.training import rundir, trainer

# PAPER.md section 4. (random, transfer) in AUC percent, with std where the paper gives it; unsure marks secondary
# sources.
PAPER_T1 = {"resnet50": ((96.4, 0.05), (96.7, 0.04), False), "inceptionv3": ((96.6, 0.13), (96.7, 0.05), False),
            "cbr_larget": ((96.2, 0.04), (96.2, 0.04), False), "cbr_largew": ((95.8, None), (95.8, None), True),
            "cbr_small": ((95.7, None), (95.8, None), True), "cbr_tiny": ((95.8, None), (95.8, None), True)}
PAPER_T2_RESNET = {"Atelectasis": (79.52, 79.76), "Cardiomegaly": (75.23, 74.93), "Consolidation": (85.49, 84.42),
                   "Edema": (88.34, 88.89), "Pleural Effusion": (88.70, 88.07)}
PAPER_T3 = {"resnet50": (92.2, 94.6, False), "cbr_larget": (93.6, 93.9, True), "cbr_largew": (93.6, 93.7, True)}
# A difference in AUC below this is "no difference" for the readings (the paper's T1 gaps are <= 0.3 points).
AUC_TOLERANCE = 0.01


# -- loading -------------------------------------------------------------------------------------------------------


def load_results(cfg, runs):
  """{run: (result dict or None, curve list)} for the planned runs."""
  from transfusion_tf.experiments import study
  out = {}
  for r in runs:
    d = study.run_dir(cfg, r)
    out[r] = (rundir.read_json(os.path.join(d, "result.json")), rundir.read_json(os.path.join(d, "curve.json"), []))
  return out


def _group(results, model, init, subset=None):
  return [res for r, (res, _) in results.items()
          if r.model == model and r.init == init and r.subset == subset and res is not None]


def _mean_std(values):
  vals = [v for v in values if v is not None and np.isfinite(v)]
  if not vals:
    return None, None, 0
  return float(np.mean(vals)), (float(np.std(vals, ddof=1)) if len(vals) > 1 else None), len(vals)


def _fmt(mean, std, n, scale=100.0, digits=1):
  if mean is None:
    return "—"
  s = f"{mean * scale:.{digits}f}"
  if std is not None:
    s += f" ± {std * scale:.{digits}f}"
  return s + ("" if n > 1 else " (1 seed)")


def _paper(value, std=None, unsure=False):
  if value is None:
    return "unknown"
  s = f"{value:.2f}".rstrip("0").rstrip(".") if std is None else f"{value} ± {std}"
  return s + (" [unsure]" if unsure else "")


# -- curve figures -------------------------------------------------------------------------------------------------


def _save(fig, out_prefix, data):
  png = out_prefix + ".png"
  tmp = png + ".tmp.png"
  FigureCanvasAgg(fig)
  fig.savefig(tmp, dpi=110, bbox_inches="tight")
  os.replace(tmp, png)
  rundir.atomic_write_json(out_prefix + ".json", data)
  return png


def mean_curve(curves, metric):
  """Mean and std over seeds of `metric` at the steps every curve shares. curves: list of curve.json lists."""
  if not curves:
    return [], [], []
  steps = sorted(set.intersection(*[{p["step"] for p in c} for c in curves]))
  vals = np.array([[next(p[metric] for p in c if p["step"] == s) for s in steps] for c in curves], float)
  return steps, np.nanmean(vals, axis=0).tolist(), np.nanstd(vals, axis=0).tolist()


def figure_curves(curves_by_label, metric, out_prefix, title, threshold=None):
  """AUC against steps, one line per init label (mean over seeds, band = std). Writes PNG + JSON."""
  fig = Figure(figsize=(6.4, 4.2))
  ax = fig.add_subplot(1, 1, 1)
  data = {"figure": os.path.basename(out_prefix), "metric": metric, "threshold": threshold, "curves": {}}
  for label, curves in curves_by_label.items():
    steps, mean, std = mean_curve(curves, metric)
    if not steps:
      continue
    data["curves"][label] = {"steps": steps, "mean": mean, "std": std, "seeds": len(curves)}
    line, = ax.plot(steps, mean, marker="o", ms=3, label=f"{label} (n={len(curves)})")
    ax.fill_between(steps, np.subtract(mean, std), np.add(mean, std), color=line.get_color(), alpha=0.15)
  if threshold is not None:
    ax.axhline(threshold, color="gray", ls="--", lw=1, label=f"threshold {threshold}")
  ax.set_xlabel("training step")
  ax.set_ylabel(metric)
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7)
  data["png"] = _save(fig, out_prefix, data)
  return data


def figure_wt_steps(model, labels, steps_by_label, out_prefix, threshold):
  """WT: steps-to-threshold against the number of transfused stages (none = 0). Unreached runs are drawn at the
  step budget with an open marker."""
  fig = Figure(figsize=(6.4, 4.0))
  ax = fig.add_subplot(1, 1, 1)
  xs, ys, data = [], [], {"figure": "wt_steps", "model": model, "threshold": threshold, "points": []}
  for k, label in enumerate(labels):
    for value, reached in steps_by_label.get(label, []):
      ax.plot(k, value, "o", color="tab:blue", mfc="tab:blue" if reached else "none")
      data["points"].append({"stages": k, "label": label, "steps": value, "reached": reached})
      xs.append(k)
      ys.append(value)
  ax.set_xticks(range(len(labels)))
  ax.set_xticklabels(labels, rotation=30, fontsize=8)
  ax.set_xlabel("transfused up to stage")
  ax.set_ylabel(f"steps to {threshold}")
  ax.set_title(f"WT: weight transfusion, {model}")
  ax.grid(alpha=0.3)
  data["png"] = _save(fig, out_prefix, data)
  return data


# -- readings ------------------------------------------------------------------------------------------------------


def _verdict(holds, text):
  word = {True: "**holds**", False: "**does not hold**", None: "**inconclusive**"}[holds]
  return f"{word}: {text}"


def read_equal(random, transfer, what):
  """Reading of "transfer gives about the same AUC as random init" for one model."""
  (mr, sr, nr), (mt, st, nt) = random, transfer
  if mr is None or mt is None:
    return _verdict(None, f"{what}: missing runs")
  diff = mt - mr
  spread = max(sr or 0.0, st or 0.0)
  text = (f"{what}: transfer − random = {diff * 100:+.2f} AUC points (random {mr * 100:.2f}, transfer "
          f"{mt * 100:.2f}, {min(nr, nt)} seed(s)); the paper reports differences of at most 0.3 points")
  if abs(diff) < AUC_TOLERANCE:
    return _verdict(True, text)
  if min(nr, nt) < 2 or abs(diff) < 2 * spread:
    return _verdict(None, text + "; the gap is not clearly beyond seed noise")
  return _verdict(False, text)


def steps_summary(results, model, init, budget):
  """(mean steps-to-threshold counting unreached runs at the budget, runs reached, runs)."""
  group = _group(results, model, init)
  steps = [res["steps_to_threshold"] for res in group]
  reached = [s for s in steps if s is not None]
  if not steps:
    return None, 0, 0
  return float(np.mean([s if s is not None else budget for s in steps])), len(reached), len(steps)


# -- the report ----------------------------------------------------------------------------------------------------


def _table(header, rows):
  lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
  lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
  return "\n".join(lines)


def _write_csv(path, header, rows):
  tmp = path + ".tmp"
  with open(tmp, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(header)
    w.writerows(rows)
  os.replace(tmp, path)


def _param_count(cfg, model):
  size = max(cfg.base.image_size, models.MIN_SIZE[model])
  m = models.build_model(model, 5, (size, size, 3), **cfg.model_kwargs(model))
  return m.count_params()


def write_report(cfg, runs, analyses, wall_seconds):
  """Writes OUT/report.md with tables (also as CSV), figures and readings. Returns its path."""
  from transfusion_tf.experiments import study
  out = cfg.out
  adir = os.path.join(out, "analysis")
  os.makedirs(adir, exist_ok=True)
  results = load_results(cfg, runs)
  task = tasks.get_task(tasks.DATASETS[cfg.base.dataset])
  primary = task.primary_metric
  exps = set(cfg.experiments)
  threshold = cfg.base.convergence_auc
  budget = cfg.base.train_steps
  synthetic = cfg.base.dataset.startswith("synthetic_")
  sources = study.source_plan(cfg, runs) if any(r.needs_source() for r in runs) else {}
  any_result = next((res for res, _ in results.values() if res), None)
  lines = ["# transfusion_tf study report", ""]
  lines += [f"- **Data:** `{cfg.base.dataset}`: " + (
      "the embedded **synthetic** task (generated images, not real patients)" if synthetic else "real data") +
      f"; image size {cfg.base.image_size} px, {budget} steps, batch {cfg.base.batch_size}, "
      f"{cfg.seeds} seed(s)."]
  if sources:
    desc = []
    for m, s in sources.items():
      if s == "pretrain":
        desc.append(f"{m}: **synthetic source task standing in for ImageNet** (no ImageNet weights were available; "
                    f"pretrained here for {cfg.pretrain_steps} steps at "
                    f"{study.pretrain_config(cfg, m).image_size} px)")
      elif s == "imagenet":
        desc.append(f"{m}: ImageNet (Keras cache)")
      else:
        desc.append(f"{m}: `{s}`")
    lines.append("- **Pretrained source:** " + "; ".join(desc) + ".")
  lines.append(f"- **Machine:** {any_result['device'] if any_result else trainer.device_description()}.")
  run_secs = sum(res["seconds"] for res, _ in results.values() if res)
  lines.append(f"- **Wall time:** {wall_seconds / 60:.1f} min for this invocation; the finished runs' training "
               f"time adds up to {run_secs / 60:.1f} min. Generated {datetime.datetime.now():%Y-%m-%d %H:%M}.")
  done = sum(1 for res, _ in results.values() if res)
  lines.append(f"- **Runs:** {done} of {len(runs)} finished. Numbers are AUC × 100, mean ± std over seeds.")
  if synthetic:
    lines += ["", "> These numbers come from synthetic data and a synthetic source task. They test the tool and "
              "the direction of the paper's claims, not the paper's values; the paper's numbers are beside ours "
              "for reference only."]
  lines.append("")
  readings = []

  table_models = [m for m in cfg.models]
  if exps & {"T1", "T2"} and task.name == "retina":
    header = ["model", "params", "random (ours)", "transfer (ours)", "random (paper)", "transfer (paper)"]
    rows = []
    for m in table_models:
      r = _mean_std([res["best"][primary] for res in _group(results, m, "random")])
      t = _mean_std([res["best"][primary] for res in _group(results, m, "pretrained")])
      (pr, prs), (pt, pts), unsure = PAPER_T1.get(m, ((None, None), (None, None), True))
      rows.append([m, f"{_param_count(cfg, m):,}", _fmt(*r), _fmt(*t), _paper(pr, prs, unsure),
                   _paper(pt, pts, unsure)])
      readings.append(("T1", read_equal(r, t, m)))
    lines += ["## T1: RETINA referable AUC, random init vs transfer", "",
              f"Best validation `{primary}` over training.", "", _table(header, rows), ""]
    _write_csv(os.path.join(out, "table_t1.csv"), header, rows)
  if exps & {"T1", "T2"} and task.name == "cxr":
    header = ["model", "pathology", "random (ours)", "transfer (ours)", "random (paper)", "transfer (paper)"]
    rows = []
    for m in table_models:
      for p in tasks.CXR_PATHOLOGIES + ("mean",):
        key = f"auc_{tasks.metric_key(p)}"
        r = _mean_std([res["best"][key] for res in _group(results, m, "random")])
        t = _mean_std([res["best"][key] for res in _group(results, m, "pretrained")])
        paper = PAPER_T2_RESNET.get(p) if m == "resnet50" else None
        rows.append([m, p, _fmt(*r, digits=2), _fmt(*t, digits=2), _paper(paper[0]) if paper else "unknown",
                     _paper(paper[1]) if paper else "unknown"])
        if p == "mean":
          readings.append(("T2", read_equal(r, t, f"{m} mean AUC")))
    lines += ["## T2: CheXpert AUC per pathology, random init vs transfer", "", _table(header, rows), ""]
    _write_csv(os.path.join(out, "table_t2.csv"), header, rows)
  if "T3" in exps:
    n = cfg.small_data_subset
    header = ["model", f"random, n={n}", f"transfer, n={n}", "random, full", "transfer, full", "paper (n=5000)"]
    rows = []
    for m in table_models:
      rs = _mean_std([res["best"][primary] for res in _group(results, m, "random", n)])
      ts = _mean_std([res["best"][primary] for res in _group(results, m, "pretrained", n)])
      rf = _mean_std([res["best"][primary] for res in _group(results, m, "random")])
      tf_ = _mean_std([res["best"][primary] for res in _group(results, m, "pretrained")])
      p = PAPER_T3.get(m)
      rows.append([m, _fmt(*rs), _fmt(*ts), _fmt(*rf), _fmt(*tf_),
                   f"{p[0]} / {p[1]}" + (" [unsure]" if p[2] else "") if p else "unknown"])
      if None not in (rs[0], ts[0], rf[0], tf_[0]):
        gain_small, gain_full = ts[0] - rs[0], tf_[0] - rf[0]
        text = (f"{m}: transfer gain {gain_small * 100:+.2f} points with {n} images vs {gain_full * 100:+.2f} with "
                "all; the paper finds a larger gain in the small-data regime (ResNet50: +2.4)")
        holds = True if gain_small > gain_full + AUC_TOLERANCE / 2 else (
            False if gain_small < gain_full - AUC_TOLERANCE / 2 else None)
        readings.append(("T3", _verdict(holds, text)))
    lines += ["## T3: small-data regime", "", _table(header, rows), ""]
    _write_csv(os.path.join(out, "table_t3.csv"), header, rows)

  conv_inits = []
  for r in runs:
    if r.subset is None and r.init not in conv_inits:
      conv_inits.append(r.init)
  if threshold is not None and exps & {"MV", "WT", "SL", "GB"}:
    header = ["model"] + conv_inits
    rows = []
    for m in table_models + (["resnet50"] if "SL" in exps and "resnet50" not in table_models else []):
      row = [m]
      for init in conv_inits:
        mean, reached, total = steps_summary(results, m, init, budget)
        row.append("—" if mean is None else f"{mean:.0f} ({reached}/{total} reached)")
      rows.append(row)
    lines += ["## Convergence: steps to threshold", "",
              f"Training steps until validation `{primary}` first reaches {threshold} (evaluated every "
              f"{cfg.base.eval_every} steps; runs that never reach it count as the budget, {budget}).", "",
              _table(header, rows), ""]
    _write_csv(os.path.join(out, "table_convergence.csv"), header, rows)

  def curves(model, inits):
    return {i: [c for r, (res, c) in results.items() if r.model == model and r.init == i and r.subset is None and c]
            for i in inits}

  figures = []
  if "MV" in exps:
    for m in table_models:
      d = figure_curves(curves(m, ["random", "meanvar", "pretrained"]), primary,
                        os.path.join(adir, f"mv_{m}"), f"MV: Mean-Var init, {m}", threshold)
      figures.append(("MV", m, d["png"]))
      sr, _, _ = steps_summary(results, m, "random", budget)
      sm, _, _ = steps_summary(results, m, "meanvar", budget)
      sp, _, _ = steps_summary(results, m, "pretrained", budget)
      if None not in (sr, sm, sp) and threshold is not None:
        text = f"{m}: steps to {threshold}: random {sr:.0f}, meanvar {sm:.0f}, transfer {sp:.0f}"
        # Only when full transfer itself is faster than random can Mean-Var's place between them be read.
        holds = None if sp >= sr else (True if sp <= sm < sr else False if sm >= sr else None)
        readings.append(("MV", _verdict(holds, text + "; the paper: meanvar faster than random, slower than "
                                        "transfer")))
  if "WT" in exps:
    for m in table_models:
      stages = list(study.wt_stages(cfg, m))
      labels = ["random" if s == "none" else f"transfuse:{s}" for s in stages] + ["pretrained"]
      d = figure_curves(curves(m, labels), primary, os.path.join(adir, f"wt_{m}"), f"WT: weight transfusion, {m}",
                        threshold)
      figures.append(("WT", m, d["png"]))
      if threshold is not None:
        steps = {lab: [(res["steps_to_threshold"] if res["steps_to_threshold"] is not None else budget,
                        res["steps_to_threshold"] is not None) for res in _group(results, m, lab)] for lab in labels}
        d = figure_wt_steps(m, [s for s in stages] + ["all"], {k: steps[lab] for k, lab in
                                                               zip(list(stages) + ["all"], labels)},
                            os.path.join(adir, f"wt_steps_{m}"), threshold)
        figures.append(("WT", m + " steps", d["png"]))
        means = [steps_summary(results, m, lab, budget)[0] for lab in labels]
        if None not in means and len(means) >= 3:
          total = means[0] - means[-1]
          first = means[0] - means[1]
          text = (f"{m}: steps to {threshold}: " + ", ".join(f"{lab} {v:.0f}" for lab, v in zip(labels, means)))
          if total <= 0:
            readings.append(("WT", _verdict(None, text + "; full transfer gave no speed-up, so the share of the "
                                            "lowest layers is undefined")))
          else:
            readings.append(("WT", _verdict(first / total >= 0.5 if first / total >= 0.5 or first / total < 0.2
                                            else None, text + f"; transfusing {labels[1].split(':')[-1]} alone "
                                            f"gives {first / total:.0%} of the full speed-up (the paper: most of it)")))
  if "SL" in exps:
    d = figure_curves(curves("resnet50", ["random", "slim", "pretrained"]), primary, os.path.join(adir, "sl"),
                      "SL: Slim ResNet50 vs full transfer", threshold)
    figures.append(("SL", "resnet50", d["png"]))
    s = _mean_std([res["best"][primary] for res in _group(results, "resnet50", "slim")])
    p = _mean_std([res["best"][primary] for res in _group(results, "resnet50", "pretrained")])
    readings.append(("SL", read_equal(p, s, "resnet50 slim vs full transfer (read 'transfer' as slim)")))
  if "GB" in exps:
    for m in table_models:
      c1 = "transfuse:stem" if m == "inceptionv3" else "transfuse:conv1"
      labels = ["random", "gabor_low", "gabor_high", c1, "pretrained"]
      d = figure_curves(curves(m, labels), primary, os.path.join(adir, f"gb_{m}"), f"GB: synthetic Gabor conv1, {m}",
                        threshold)
      figures.append(("GB", m, d["png"]))
      sr, sl, sh = (steps_summary(results, m, lab, budget)[0] for lab in labels[:3])
      if None not in (sr, sl, sh) and threshold is not None:
        best = min(sl, sh)
        text = f"{m}: steps to {threshold}: random {sr:.0f}, gabor low {sl:.0f}, gabor high {sh:.0f}"
        readings.append(("GB", _verdict(True if best < sr else False, text + "; the paper: Gabor conv1 speeds up "
                                        "convergence")))

  # Representation figures.
  rep_lines = []
  f2 = analyses.get("F2")
  if f2:
    rep_lines += ["### F2: similarity of the top two stages", "", f"![F2]({os.path.relpath(f2['png'], out)})", ""]
    by = {}
    for p in f2.get("pairs", []):
      by.setdefault(p["model"], {}).setdefault(p["kind"], []).append(p["similarity"])
    for m, kinds in by.items():
      pr, rr = kinds.get("pretrained_vs_random"), kinds.get("random_vs_random")
      if pr and rr:
        a, b = float(np.mean(pr)), float(np.mean(rr))
        large = m in ("resnet50", "inceptionv3")
        text = (f"{m}: pretrained-vs-random {a:.3f} vs random-vs-random {b:.3f}; the paper: "
                + ("below the baseline for large models" if large else "little difference for small models"))
        holds = (a < b - 0.01) if large else (abs(a - b) <= 0.05)
        readings.append(("F2", _verdict(holds if len(pr) + len(rr) > 2 else None, text)))
      else:
        readings.append(("F2", _verdict(None, f"{m}: needs at least 2 random seeds and a pretrained run")))
  f3 = analyses.get("F3")
  if f3:
    rep_lines += ["### F3: similarity to initialisation per stage", "", f"![F3]({os.path.relpath(f3['png'], out)})",
                  ""]
    for m in table_models:
      per = {}
      for r in f3.get("runs", []):
        if r["model"] == m:
          for s, v in r["similarity"].items():
            per.setdefault(r["kind"], {}).setdefault(s, []).append(v)
      if "pretrained" in per and "random" in per:
        stages = list(per["random"])
        gap = [float(np.mean(per["pretrained"][s]) - np.mean(per["random"][s])) for s in stages]
        low = [float(np.mean(per["random"][s])) for s in stages]
        text = (f"{m}: pretrained − random per stage " + ", ".join(f"{s} {g:+.2f}" for s, g in zip(stages, gap)))
        bottom_positive = all(g > 0 for g in gap[:2])
        lowest_closest = low[0] >= max(low[1:]) - 1e-9 if len(low) > 1 else None
        readings.append(("F3", _verdict(bottom_positive and bool(lowest_closest), text + (
            f"; lowest stage closest to init: {lowest_closest}; the paper: lowest layers stay closest to init and "
            "the gap is positive mainly in the bottom two"))))
  f4 = analyses.get("F4")
  if f4:
    rep_lines += ["### F4: conv1 similarity at init vs after training", "",
                  f"![F4]({os.path.relpath(f4['png'], out)})", ""]
    for m, fit in (f4.get("models") or {}).items():
      r2 = fit.get("r2") if isinstance(fit, dict) else None
      if r2 is None:
        readings.append(("F4", _verdict(None, f"{m}: {fit.get('n', 0)} pair(s), too few for a fit (seeds x "
                                        "inits must give at least 3 pairs)")))
      else:
        expect_high = m == "resnet50"
        readings.append(("F4", _verdict(None if fit.get("n", 3) < 3 else (r2 >= 0.5) == expect_high,
                                        f"{m}: R² = {r2:.2f} over {fit.get('n', '?')} pairs; the paper: "
                                        + ("strong correlation (0.75-0.84)" if expect_high else "no correlation"))))
  f5 = analyses.get("F5")
  if f5:
    rep_lines += ["### F5: conv1 filters before and after training", "",
                  f"![F5]({os.path.relpath(f5['png'], out)})", ""]
    moved = {(p["model"], p["kind"]): p.get("mean_relative_l2_change") for p in f5.get("panels", [])}
    rep_lines.append(", ".join(f"{m} {k}: filters moved {v:.2f} (mean relative L2)" for (m, k), v in moved.items()
                               if v is not None) + ".")
    rep_lines.append("")
    sel = [p for p in f5.get("panels", []) if p.get("orientation_selectivity_before") is not None]
    if sel:
      def refs_text(p):
        refs = p.get("selectivity_references") or {}
        return (f"He-normal random {refs.get('random', float('nan')):.2f}, Gabor bank "
                f"{refs.get('gabor', float('nan')):.2f}")
      # The references depend on the kernel shape: one set when every panel shares it, else one per panel.
      shared = len({refs_text(p) for p in sel}) == 1
      rep_lines.append("conv1 orientation selectivity before -> after training (0 = unoriented, 1 = a pure grating"
                       + (f"; {refs_text(sel[0])}" if shared else "") + "): " + ", ".join(
                           f"{p['model']} {p['kind']} {p['orientation_selectivity_before']:.2f} -> "
                           f"{p['orientation_selectivity_after']:.2f}" + ("" if shared else f" ({refs_text(p)})")
                           for p in sel) + ".")
      rep_lines.append("")
      for p in sel:
        rnd = (p.get("selectivity_references") or {}).get("random")
        if p["kind"] == "pretrained" and rnd:
          v = p["orientation_selectivity_before"]
          readings.append(("F5", _verdict(v > 2 * rnd, f"{p['model']} pretrained conv1 orientation selectivity "
                                          f"{v:.2f} vs {rnd:.2f} for random filters; the paper: pretrained conv1 "
                                          "filters are Gabor-like (oriented)")))
    cbr = next((m for m, _ in moved if m.startswith("cbr_")), None)
    if ("resnet50", "random") in moved and cbr and (cbr, "random") in moved:
      a, b = moved[("resnet50", "random")], moved[(cbr, "random")]
      readings.append(("F5", _verdict(a < b, f"ResNet50 conv1 moved {a:.2f}, {cbr} conv1 {b:.2f} (random init); "
                                      "the paper: ResNet filters barely move, CBR-Small's move a lot")))
  if figures:
    lines += ["## Convergence figures", ""]
    for exp, m, png in figures:
      lines += [f"### {exp}: {m}", "", f"![{exp} {m}]({os.path.relpath(png, out)})", ""]
  if rep_lines:
    lines += ["## Representations (SVCCA)", ""] + rep_lines
  lines += ["## Reading the results against the paper", ""]
  if readings:
    lines += [f"- {exp}: {text}" for exp, text in readings]
  else:
    lines.append("- No reading: not enough finished runs.")
  lines += ["", "Rules: an AUC difference under 1 point counts as equal; a difference counts as real only when it "
            "exceeds twice the seed spread with at least 2 seeds; otherwise the reading is inconclusive.", ""]
  lines += ["## Runs", "", _table(["run", "init source", f"final {primary}", f"best {primary}", "steps to thr",
                                   "seconds"],
                                  [[r.name, (res.get("source_weights") or "—").split(":")[0][-60:] if res else "—",
                                    f"{res['final'][primary]:.4f}" if res else "unfinished",
                                    f"{res['best'][primary]:.4f}" if res else "—",
                                    (res["steps_to_threshold"] if res and res["steps_to_threshold"] is not None
                                     else "—"), f"{res['seconds']:.0f}" if res else "—"]
                                   for r, (res, _) in results.items()]), ""]
  lines.append(f"TensorBoard: `tensorboard --logdir {os.path.join(out, 'tb')}`")
  path = os.path.join(out, "report.md")
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.write("\n".join(lines) + "\n")
  os.replace(tmp, path)
  return path
