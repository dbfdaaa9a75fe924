"""The answer for this task: the report's first section, one short paragraph per question a researcher asks, each
with its number, its 95% CI, its verdict by the study's rules and a link to the section it comes from.

  1. Does pretraining change the final test metric?   transfer − random test AUC per model, read for equivalence (T1/T2).
  2. Does it speed up training?                       normalised validation curve area, transfer − random, per model.
  3. Where does the benefit come from?                the fewest lowest stages whose transfusion closes more than half
                                                      of the random-to-transfer gap (WT), Mean-Var's share (MV), the
                                                      stages that change least from their init (F3).
  4. What is the cheapest model that does as well?    the smallest arm whose test AUC is equivalent to the best arm's.
  5. What would settle what is still open?            per open answer, its minimum detectable effect, and the command
                                                      that prints the seeds and test images it needs.

Every number goes through the same functions as the sections below (common.auc_contrast, curves.read_faster, the
trained-run gate), so an answer never says more than its section. A question whose experiments the study did not
run says so and names the flag that adds them. Verdicts here are the unadjusted ones; the readings section applies
Holm over the whole study.
"""
from transfusion_tf.experiments import common, curves, plan, stats

TITLE = "The answer for this task"


def _anchor(title):
  """The markdown anchor of a section title (GitHub's rule: lower case, punctuation dropped, spaces to dashes)."""
  keep = "".join(ch for ch in title.lower() if ch.isalnum() or ch in " -")
  return "#" + keep.replace(" ", "-")


def _link(ctx, exp_id, titles):
  title = titles.get(exp_id)
  return f" ([{exp_id}]({_anchor(title)}))" if title else ""


def _ci(iv, scale=100.0, digits=1):
  if iv is None:
    return "no data"
  if iv.lo is None:
    return f"{iv.mean * scale:+.{digits}f} (no CI: {iv.note or stats.FEW_SEEDS})"
  return f"{iv.mean * scale:+.{digits}f} [{iv.lo * scale:.{digits}f}, {iv.hi * scale:.{digits}f}]"


def _has(ctx, model, init):
  return bool(ctx.group(model, init))


def _missing(what, flag):
  return f"not run: {what} (add it with `{flag}`)."


def q1(ctx, titles):
  key = ctx.primary
  exp = "T1" if ctx.task.kind == "grading" else "T2"
  parts = []
  for m in ctx.cfg.models:
    if not (_has(ctx, m, "pretrained") and _has(ctx, m, "random")):
      continue
    iv = common.auc_difference(ctx, m, "pretrained", "random", key)
    v = common.gate_trained(ctx, common.read_equivalence(iv, ctx.cfg.equivalence_margin, what=m),
                            common.arm_runs(ctx, m, ("pretrained", "random")))
    parts.append(f"{m}: {_ci(iv)} AUC points, **{v.verdict}**")
  if not parts:
    return _missing("random and pretrained runs of one model", "--study_inits=random,pretrained")
  return (f"Test `{key}`, transfer − random, read as 'no difference within ±{ctx.cfg.equivalence_margin * 100:.1f} "
          f"points': " + "; ".join(parts) + "." + _link(ctx, exp, titles))


def q2(ctx, titles):
  parts = []
  for m in ctx.cfg.models:
    if not (_has(ctx, m, "pretrained") and _has(ctx, m, "random")):
      continue
    v = curves.read_faster(ctx, m, "pretrained", "random", "transfer faster than random")
    a, _ = common.normalized_area_group(ctx, m, "pretrained")
    b, _ = common.normalized_area_group(ctx, m, "random")
    parts.append(f"{m}: {_ci(common.diff_iv(a, b), scale=1, digits=3)}, **{v.verdict}**")
  if not parts:
    return _missing("random and pretrained runs of one model", "--study_inits=random,pretrained")
  return ("Normalised validation curve area (progress to each run's own plateau, to step "
          f"{ctx.cfg.area_steps}), transfer − random: " + "; ".join(parts) + "."
          + _link(ctx, "convergence", titles))


def _wt_answer(ctx, m):
  """The fewest lowest WT stages whose normalised area exceeds the midpoint of random and full transfer (a
  directional reading that holds), or why not."""
  labels = [plan.wt_label(s) for s in plan.wt_stages(ctx.cfg, m)][1:]
  if not labels or not _has(ctx, m, "random") or not _has(ctx, m, "pretrained"):
    return None
  rnd, _ = common.normalized_area_group(ctx, m, "random")
  full, _ = common.normalized_area_group(ctx, m, "pretrained")
  for lab in labels:
    low, _ = common.normalized_area_group(ctx, m, lab)
    if not low:
      continue
    iv = common.contrast_iv([low, rnd, full], [1.0, -0.5, -0.5])
    v = common.read_direction(iv, what=lab, margin=common.direction_margin(ctx.cfg, "fraction"))
    if v.verdict == stats.HOLDS:
      return f"{m}: transfusing up to {lab.split(':')[-1]} closes more than half the gap ({_ci(iv, 1, 3)}, holds)"
  return f"{m}: no transfused prefix is shown to close more than half the gap (inconclusive or does not hold)"


def q3(ctx, titles):
  out = []
  chosen = set(ctx.cfg.experiments)
  wt = [a for a in (_wt_answer(ctx, m) for m in ctx.cfg.models) if a] if "WT" in chosen else []
  out.append("Weight transfusion: " + ("; ".join(wt) + "." + _link(ctx, "WT", titles) if wt else
                                        _missing("weight transfusion", "--experiments=...,WT")))
  mv = []
  for m in ctx.cfg.models:
    if all(_has(ctx, m, i) for i in ("random", "meanvar", "pretrained")):
      r, _ = common.normalized_area_group(ctx, m, "random")
      v, _ = common.normalized_area_group(ctx, m, "meanvar")
      p, _ = common.normalized_area_group(ctx, m, "pretrained")
      gain, full = common.diff_iv(v, r), common.diff_iv(p, r)
      share = (f"{gain.mean / full.mean:.2f}" if gain is not None and full is not None and abs(full.mean) > 1e-9
               else "n/a")
      mv.append(f"{m}: Mean-Var − random {_ci(gain, 1, 3)} of transfer − random {_ci(full, 1, 3)} (share {share}, "
                "point estimate; the share of weight scale rather than features)")
  out.append("Mean-Var: " + ("; ".join(mv) + "." + _link(ctx, "MV", titles) if mv else
                              _missing("Mean-Var init", "--study_inits=...,meanvar --experiments=...,MV")))
  f3 = ctx.analyses.get("F3") if "F3" in chosen else None
  if f3:
    from transfusion_tf.experiments import f3 as f3_mod  # pylint: disable=import-outside-toplevel
    least = []
    for m in ctx.cfg.models:
      sims = f3_mod.per_stage(ctx, m, "pretrained")
      means = {s: sum(v) / len(v) for s, v in sims.items() if v}
      if means:
        top = sorted(means, key=means.get, reverse=True)[:2]
        least.append(f"{m}: {', '.join(f'{s} ({means[s]:.2f})' for s in top)}")
    out.append("Least changed from their (pretrained) init, mean SVCCA to init: " + "; ".join(least) + "."
               + _link(ctx, "F3", titles))
  else:
    out.append("Least changed stages: " + _missing("F3", "--experiments=...,F3"))
  return " ".join(out)


def q4(ctx, titles):
  key = ctx.primary
  arms = [(m, i) for m in ctx.cfg.models for i in ("random", "pretrained", "meanvar") if _has(ctx, m, i)]
  if not arms:
    return "No finished arm."
  means = {a: common.group_interval(ctx, a[0], a[1], key) for a in arms}
  means = {a: iv for a, iv in means.items() if iv is not None}
  best = max(means, key=lambda a: means[a].mean)
  params = {m: common.param_count(ctx.cfg, m) for m in dict.fromkeys(m for m, _ in means)}
  cheaper = sorted((a for a in means if params[a[0]] < params[best[0]]), key=lambda a: params[a[0]])
  best_text = (f"the best arm {best[0]}/{best[1]} ({means[best].mean * 100:.1f} test AUC, {params[best[0]]:,} "
               f"parameters, {_throughput(ctx.group(*best))})")
  for arm in cheaper:
    group_a, group_b = ctx.group(*arm), ctx.group(*best)
    iv = common.runs_contrast([group_a, group_b], [1.0, -1.0], key)
    v = common.gate_trained(ctx, common.read_equivalence(iv, ctx.cfg.equivalence_margin, what="x"),
                            group_a + group_b)
    if v.verdict == stats.HOLDS:
      return (f"{arm[0]}/{arm[1]} ({params[arm[0]]:,} parameters, {_throughput(group_a)}) is equivalent to "
              f"{best_text}: difference {_ci(iv)} AUC points, **holds**." + _link(ctx, "T1", titles)
              + " FLOPs per image and inference speed are not measured yet.")
  if not cheaper:
    return (f"{best_text[0].upper() + best_text[1:]} is the smallest model studied." + _link(ctx, "T1", titles)
            + " FLOPs per image and inference speed are not measured yet.")
  return (f"No smaller arm is shown to be equivalent within ±{ctx.cfg.equivalence_margin * 100:.1f} points to "
          f"{best_text}." + _link(ctx, "T1", titles) + " FLOPs per image and inference speed are not measured yet.")


def _throughput(group):
  """Training images per second of a group's runs as result.json records them (steps x global batch / seconds,
  evaluations included), as text."""
  rates = [r.result["final"]["step"] * r.result.get("global_batch", 0) / r.result["seconds"] for r in group
           if r.result.get("seconds") and r.result.get("global_batch") and (r.result.get("final") or {}).get("step")]
  return f"{sum(rates) / len(rates):.0f} training img/s here" if rates else "training speed not recorded"


def q5(ctx, readings):
  open_ = [v for _, v in readings if v.verdict == stats.INCONCLUSIVE]
  if not open_:
    return "Nothing: every reading is decided."
  with_mde = [v for v in open_ if v.mde is not None]
  return (f"{len(open_)} of {len(readings)} readings are open; their minimum detectable effects (80% power) are in "
          f"the readings below ({len(with_mde)} of them have one). `transfusion-study --flagfile=... "
          f"--study_stage=plan --pilot={ctx.cfg.out}` prints, for each claim, the seeds per arm it needs at 1x-10x "
          "this study's test images, from this study's variances (experiments/power.py).")


def section(ctx, titles, readings):
  """The answer section's markdown lines. titles: {experiment id: its section title}; readings: [(id, Verdict)]
  as the report read them (before Holm)."""
  lines = [f"## {TITLE}", "",
           "Each answer: the number, its 95% CI and its verdict by the study's rules (before the family-wise "
           "adjustment, which the readings section applies), with a link to where it comes from.", ""]
  for i, (question, text) in enumerate((
      ("Does pretraining change the final test metric?", q1(ctx, titles)),
      ("Does it speed up training?", q2(ctx, titles)),
      ("Where does the benefit come from?", q3(ctx, titles)),
      ("What is the cheapest model that does as well?", q4(ctx, titles)),
      ("What would settle what is still open?", q5(ctx, readings))), start=1):
    lines += [f"{i}. **{question}** {text}", ""]
  return lines
