"""The answer for this task: the report's first section, one short paragraph per question a researcher asks, each
with its number, its 95% CI, its verdict by the study's rules and a link to the section it comes from.

  1. Does pretraining change the final test metric?   transfer − random test AUC per model, read for equivalence (T1/T2).
  2. Does it speed up training?                       normalised validation curve area, transfer − random, per model.
  3. Where does the benefit come from?                the fewest lowest stages whose transfusion closes more than half
                                                      of the random-to-transfer gap (WT), Mean-Var's share of the
                                                      speed-up with Fieller's 95% CI (MV), the stages that change
                                                      least from their init (F3).
  4. What is the cheapest model that does as well?    the smallest arm whose test AUC is equivalent to the best arm's,
                                                      with both arms' parameters, FLOPs per image and measured
                                                      training and inference images/s (result.json "cost").
  5. What would settle what is still open?            first the marked runs (not trained to a plateau, or did not
                                                      learn) and the readings they hold open, then per open reading
                                                      the seeds per arm it needs at 1x and 10x the test images
                                                      (experiments/power.py, the plan command's estimate).

Every number goes through the same functions as the sections below (common.auc_contrast, curves.read_faster, the
trained-run gate), so an answer never says more than its section. A question whose experiments the study did not
run says so and names the flag that adds them (`--experiments=ANSWER` selects all of them: registry.PRESETS); one
whose runs are planned but not finished says that. Verdicts here are the unadjusted ones; the readings section
applies Holm over the whole study.
"""
import dataclasses
import math

from transfusion_tf.experiments import common, curves, plan, power, stats

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
  return (f"{iv.mean * scale:+.{digits}f} [{iv.lo * scale:.{digits}f}, {iv.hi * scale:.{digits}f}]"
          + (f" ({iv.note})" if iv.note else ""))


CEILING = ("every run scored test AUC 1.000: the task is at its ceiling on these test images, so neither a "
           "difference nor its interval can show")


def at_ceiling(iv, runs, key):
  """`iv` (a stats.Interval of test AUCs or their difference) with its note saying the task is at its ceiling when it
  has no CI only because every one of `runs` (RunResults) scored test `key` 1.0: stats.ZERO_SPREAD's 'no test-set
  noise is known' would read as a missing input, while DeLong's variance is 0 there because nothing is misranked."""
  if (iv is not None and iv.lo is None and iv.note == stats.ZERO_SPREAD and runs
      and all((r.test_metric(key) or 0.0) >= 1.0 - 1e-12 for r in runs)):
    return dataclasses.replace(iv, note=CEILING)
  return iv


def _has(ctx, model, init):
  return bool(ctx.group(model, init))


def _missing(what, flag):
  return f"not run: {what} (add it with `{flag}`, or `--experiments=ANSWER` for every question)."


def _absent(ctx, inits, what, flag):
  """Why an answer has no data: its runs are planned but unfinished, or the study did not plan them (naming the flag
  that adds them). inits: the init labels it reads together on one model (planned: all of them, on some model), or
  a function model -> those labels."""
  labels = inits if callable(inits) else lambda m: inits
  if any(labels(m) and all(ctx.planned(m, i) for i in labels(m)) for m in ctx.cfg.models):
    return f"no finished runs yet: {what} are planned but not finished (re-run the study to finish them)."
  return _missing(what, flag)


def q1(ctx, titles):
  key = ctx.primary
  exp = "T1" if ctx.task.kind == "grading" else "T2"
  parts = []
  for m in ctx.cfg.models:
    if not (_has(ctx, m, "pretrained") and _has(ctx, m, "random")):
      continue
    iv = at_ceiling(common.auc_difference(ctx, m, "pretrained", "random", key),
                    common.arm_runs(ctx, m, ("pretrained", "random")), key)
    v = common.gate_trained(ctx, common.read_equivalence(iv, ctx.cfg.equivalence_margin, what=m),
                            common.arm_runs(ctx, m, ("pretrained", "random")))
    parts.append(f"{m}: {_ci(iv)} AUC points, **{v.verdict}**")
  if not parts:
    return _absent(ctx, ("random", "pretrained"), "random and pretrained runs of one model",
                   "--study_inits=random,pretrained")
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
    return _absent(ctx, ("random", "pretrained"), "random and pretrained runs of one model",
                   "--study_inits=random,pretrained")
  return ("Normalised validation curve area (progress to each run's own plateau, to step "
          f"{ctx.cfg.area_steps}), transfer − random: " + "; ".join(parts) + "."
          + _link(ctx, "convergence", titles))


def wt_labels(ctx, m):
  """The init labels of `m`'s WT sweep (random, the transfused prefixes, full transfer)."""
  return tuple(dict.fromkeys([plan.wt_label(s) for s in plan.wt_stages(ctx.cfg, m)] + ["pretrained"]))


def _wt_answer(ctx, m):
  """The fewest lowest WT stages whose normalised area exceeds the midpoint of random and full transfer (a
  directional reading that holds), or why not: every prefix refuted (does not hold), or the lowest prefix's reading
  (inconclusive). None when the model has no finished WT arm."""
  labels = [plan.wt_label(s) for s in plan.wt_stages(ctx.cfg, m) if s != "none"]  # Bottom-up.
  labels = [lab for lab in labels if lab != "pretrained"]
  if not labels or not _has(ctx, m, "random") or not _has(ctx, m, "pretrained"):
    return None
  rnd, _ = common.normalized_area_group(ctx, m, "random")
  full, _ = common.normalized_area_group(ctx, m, "pretrained")
  read = []
  for lab in labels:
    low, _ = common.normalized_area_group(ctx, m, lab)
    if not low:
      continue
    iv = common.contrast_iv([low, rnd, full], [1.0, -0.5, -0.5])
    v = common.read_direction(iv, what=lab, margin=common.direction_margin(ctx.cfg, "fraction"))
    v = common.gate_trained(ctx, v, common.arm_runs(ctx, m, (lab, "random", "pretrained")))
    if v.verdict == stats.HOLDS:
      return (f"{m}: transfusing up to {lab.split(':')[-1]} closes more than half the gap ({_ci(iv, 1, 3)}), "
              "**holds**")
    read.append((lab, iv, v))
  if not read:
    return None
  lab, iv, v = read[0]
  if all(x.verdict == stats.DOES_NOT_HOLD for _, _, x in read):
    return (f"{m}: no transfused prefix closes more than half the gap (up to {lab.split(':')[-1]}: {_ci(iv, 1, 3)}), "
            "**does not hold**")
  return (f"{m}: no transfused prefix is shown to close more than half the gap (up to {lab.split(':')[-1]}: "
          f"{_ci(iv, 1, 3)}), **inconclusive**")


def _share_text(iv):
  """Mean-Var's share and its Fieller interval as text. An unbounded interval prints no share: with transfer − random
  possibly 0 the ratio of the means can be any number (e.g. 23.00) and says nothing."""
  if iv.lo is not None:
    return f"share {iv.mean:.2f} [{iv.lo:.2f}, {iv.hi:.2f}]"
  if iv.note == stats.UNBOUNDED:
    return ("share **inconclusive**: its 95% CI is unbounded (transfer − random's CI includes 0, so the ratio of "
            "the means is no estimate)")
  return f"share n/a ({iv.note})" if math.isnan(iv.mean) else f"share {iv.mean:.2f} (no CI: {iv.note})"


def mv_share(ctx, m):
  """stats.share_interval of (Mean-Var − random) / (transfer − random) on `m`'s normalised validation curve areas
  (one value per run; Fieller's 95% CI over seeds), or None when an arm has no finished run."""
  groups = [common.normalized_area_group(ctx, m, i)[0] for i in ("random", "meanvar", "pretrained")]
  if not all(groups):
    return None
  return stats.share_interval(*groups, level=common.LEVEL)


def q3(ctx, titles):
  out = []
  chosen = set(ctx.cfg.experiments)
  wt = [a for a in (_wt_answer(ctx, m) for m in ctx.cfg.models) if a] if "WT" in chosen else []
  out.append("Weight transfusion, read as 'the contrast A(prefix) − (A(random) + A(transfer)) / 2 of normalised "
             "curve areas is above 0': " + ("; ".join(wt) + "." + _link(ctx, "WT", titles) if wt else
                                              _absent(ctx, lambda m: wt_labels(ctx, m) if "WT" in chosen else (),
                                                      "weight transfusion runs", "--experiments=...,WT")))
  mv = []
  for m in ctx.cfg.models:
    share = mv_share(ctx, m)
    if share is None:
      continue
    r, _ = common.normalized_area_group(ctx, m, "random")
    v, _ = common.normalized_area_group(ctx, m, "meanvar")
    p, _ = common.normalized_area_group(ctx, m, "pretrained")
    gain, full = common.diff_iv(v, r), common.diff_iv(p, r)
    mv.append(f"{m}: Mean-Var − random {_ci(gain, 1, 3)} of transfer − random {_ci(full, 1, 3)}, "
              f"{_share_text(share)}")
  out.append("Mean-Var's share of the speed-up, (Mean-Var − random) / (transfer − random) of normalised curve areas, "
             "the part that weight scale rather than features gives, with Fieller's 95% CI for a ratio of means over "
             "seeds: " + ("; ".join(mv) + "." + _link(ctx, "MV", titles) if mv else
                          _absent(ctx, ("random", "meanvar", "pretrained"), "Mean-Var runs",
                                  "--experiments=...,MV")))
  f3 = ctx.analyses.get("F3") if "F3" in chosen else None
  if f3:
    from transfusion_tf.experiments import f3 as f3_mod  # pylint: disable=import-outside-toplevel
    least = []
    closest = {v.text.split(":", 1)[0]: v.verdict for v in f3_mod.readings(ctx) if "closest to init" in v.text}
    for m in ctx.cfg.models:
      sims = f3_mod.per_stage(ctx, m, "pretrained")
      means = {s: sum(v) / len(v) for s, v in sims.items() if v}
      if means:
        top = sorted(means, key=means.get, reverse=True)[:2]
        cells = ", ".join(f"{s} {common.fmt_interval(common.t_iv(sims[s]), 1, 2, bounds=common.AUC_BOUNDS)}"
                          for s in top)
        least.append(f"{m}: {cells}" + (f" ('the lowest stage stays closest to init': **{closest[m]}**)"
                                         if m in closest else ""))
    out.append("Least changed from their (pretrained) init, SVCCA to init over the pretrained runs, mean ± std "
               "[95% CI], with F3's reading over pretrained and random runs and its control: " + "; ".join(least)
               + "." + _link(ctx, "F3", titles))
  elif "F3" in chosen:
    out.append("Least changed stages: no F3 analysis yet (it runs once the pretrained and random runs are finished).")
  else:
    out.append("Least changed stages: " + _missing("F3", "--experiments=...,F3"))
  return " ".join(out)


def _mean(values):
  values = [v for v in values if v is not None]
  return sum(values) / len(values) if values else None


def arm_cost(ctx, model, group, counted):
  """The cost of an arm (a model and init's finished runs `group`): {"params", "flops_per_image", "train_ips",
  "inference_ips", "estimated_train"}. Parameters and FLOPs (2 x multiply-accumulates per image, models/cost.py)
  from the runs' result.json "cost", else counted from the model as the study builds it (`counted`: a dict cache
  {model: common.model_cost}); images/s: the mean over the runs that measured them (None where none did; runs
  from before the cost record get a training rate of steps x batch / seconds, evaluations included, flagged by
  "estimated_train")."""
  costs = [r.result.get("cost") for r in group if isinstance(r.result.get("cost"), dict)]
  if costs:
    params, flops = costs[0].get("params"), costs[0].get("flops_per_image")
  else:
    if model not in counted:
      counted[model] = common.model_cost(ctx.cfg, model)
    params, flops = counted[model]["params"], counted[model]["flops_per_image"]
  train = _mean([c.get("train_images_per_second") for c in costs])
  estimated = False
  if train is None:
    train = _mean([r.result["final"]["step"] * r.result["global_batch"] / r.result["seconds"] for r in group
                   if r.result.get("seconds") and r.result.get("global_batch")
                   and (r.result.get("final") or {}).get("step")])
    estimated = train is not None
  return {"params": params, "flops_per_image": flops, "train_ips": train,
          "inference_ips": _mean([c.get("inference_images_per_second") for c in costs]), "estimated_train": estimated}


def _flops(n):
  if n is None:
    return "FLOPs not known"
  return f"{n / 1e9:.2f} GFLOPs" if n >= 1e8 else f"{n / 1e6:.1f} MFLOPs"


def _cost_text(c):
  """'P parameters, F GFLOPs per image, T training and I inference img/s' of an arm_cost."""
  train, infer = c["train_ips"], c["inference_ips"]
  if train is not None and infer is not None and not c["estimated_train"]:
    speeds = f"{train:,.0f} training and {infer:,.0f} inference img/s"
  else:
    speeds = ", ".join((
        "training speed not recorded" if train is None else
        f"≈{train:,.0f} training img/s (evaluations included)" if c["estimated_train"] else
        f"{train:,.0f} training img/s",
        "inference speed not recorded" if infer is None else f"{infer:,.0f} inference img/s"))
  return f"{c['params']:,} parameters, {_flops(c['flops_per_image'])} per image, {speeds}"


TIE = 1e-9  # Mean test AUCs closer than this are one value (e.g. every arm at 1.000).


def best_arm(means, cost):
  """(best, tied): the arm with the highest mean test AUC and the other arms level with it (within TIE), in order.

  means: {(model, init): stats.Interval of its mean test AUC}; cost: {arm: arm_cost}. Among tied arms the one with
  the fewest parameters is best (then the order of `means`), so the answer never depends on which of equal arms
  happened to come first, and a tie at the top is named rather than hidden."""
  top = max(iv.mean for iv in means.values())
  level = [a for a in means if means[a].mean >= top - TIE]
  best = min(level, key=lambda a: (cost[a]["params"], level.index(a)))
  return best, [a for a in level if a != best]


def q4(ctx, titles):
  key = ctx.primary
  arms = [(m, i) for m in ctx.cfg.models for i in ("random", "pretrained", "meanvar") if _has(ctx, m, i)]
  means = {a: common.group_interval(ctx, a[0], a[1], key) for a in arms}
  means = {a: iv for a, iv in means.items() if iv is not None}
  if not means:
    return _absent(ctx, ("random",), "random or pretrained runs", "--study_inits=random,pretrained")
  counted = {}
  cost = {a: arm_cost(ctx, a[0], ctx.group(*a), counted) for a in means}
  best, tied = best_arm(means, cost)
  cheaper = sorted((a for a in means if cost[a]["params"] < cost[best]["params"]), key=lambda a: cost[a]["params"])
  size = ctx.cfg.base.image_size
  ties = f", tied with {', '.join(f'{a[0]}/{a[1]}' for a in tied)};" if tied else ","
  best_text = (f"the best arm {best[0]}/{best[1]} ({means[best].mean * 100:.1f} test AUC{ties} "
               f"{_cost_text(cost[best])})")
  where = (f" Costs at {size} px: FLOPs are 2 × the multiply-adds of the conv and dense layers per image; img/s as "
           "each run's result.json records them, measured where it trained"
           + (f" ({ctx.group(*best)[0].result['device']})" if ctx.group(*best)[0].result.get("device") else "")
           + ".")
  link = _link(ctx, "T1" if ctx.task.kind == "grading" else "T2", titles)
  if not cheaper:
    return f"{best_text[0].upper() + best_text[1:]} is the smallest model studied." + link + where
  tried = []
  for arm in cheaper:
    group_a, group_b = ctx.group(*arm), ctx.group(*best)
    iv = at_ceiling(common.runs_contrast([group_a, group_b], [1.0, -1.0], key), group_a + group_b, key)
    v = common.gate_trained(ctx, common.read_equivalence(iv, ctx.cfg.equivalence_margin, what="x"),
                            group_a + group_b)
    if v.verdict == stats.HOLDS:
      return (f"{arm[0]}/{arm[1]} ({_cost_text(cost[arm])}) is equivalent to {best_text}: difference {_ci(iv)} AUC "
              "points, **holds**." + link + where)
    tried.append(f"{arm[0]}/{arm[1]} {_ci(iv)}, **{v.verdict}**")
  return (f"No smaller arm is shown to be equivalent within ±{ctx.cfg.equivalence_margin * 100:.1f} points to "
          f"{best_text}: " + "; ".join(tried) + "." + link + where)


MAX_LISTED = 6  # Open readings named in Q5; the plan command's table has them all.


def _unknown_why(v):
  """Why power.needed has no answer for the reading `v`: the first of its parts without what it extrapolates from."""
  for p in v.parts or (v,):
    if p.interval is None:
      return ("a bootstrap reading against a threshold has no seed variance to extrapolate" if p.rule == "threshold"
              else "the reading has no interval")
    if p.interval.seed_var is None:  # No CI: the interval's note says why (stats' readings keep the interval).
      return p.interval.note or stats.FEW_SEEDS
    if p.margin is None:
      return "the reading has no margin"
  return "unknown"


def _needed_text(v):
  needs = [power.needed(v, f) for f in (1, 10)]
  if needs[0] is None:
    return f"seeds needed unknown ({_unknown_why(v)})"
  words = ["no number of seeds" if n == "more test images" else f"{n} seeds per arm" for n in needs]
  return f"{words[0]} at this study's test images, {words[1]} at 10x"


def reading_labels(readings, most=3):
  """A short name per reading, [(experiment id, Verdict)] -> ["F3 cbr_tiny", ...]: the id and the first ':'-separated
  part of its text, or the first 2, ..., `most` parts where readings of one experiment share the shorter name (F3
  makes two readings per model, which 'F3 cbr_tiny' alone could not tell apart)."""
  def prefix(v, k):
    return ":".join(v.text.split(":")[:k]).strip()
  labels = []
  for e, v in readings:
    k = 1
    while k < most and sum(1 for e2, v2 in readings if e2 == e and prefix(v2, k) == prefix(v, k)) > 1:
      k += 1
    labels.append(f"{e} {prefix(v, k)}")
  return labels


READINGS_TITLE = "Reading the results against the paper"  # report.py's section of the readings.


def _untrained_text(ctx, open_):
  """Q5's first step where runs carry a mark (common.RUN_RULES) and hold open readings: those stay open whatever
  the seeds, so training is named before seeds. "" otherwise."""
  held = sum(common.NOT_TRAINED in v.text for _, v in open_)
  if not held:
    return ""
  marked, finished, counts = common.marks_summary(ctx)
  advice = []
  if "still improving" in counts or "no plateau shown" in counts:
    advice.append("Train them until the plateau stop ends them (--plateau_patience with a --train_steps budget it "
                  "can reach, as flags/converged.cfg does for the demo's task).")
  if "did not learn" in counts:
    advice.append("Give a run that did not learn another learning rate, more steps or another model.")
  return (f"First the runs: {marked} of the {finished} finished runs {'is' if marked == 1 else 'are'} marked "
          f"({counts}; [runs table]({_anchor('Runs')})), and the marks hold {held} of these readings open whatever "
          "the seeds. " + " ".join(advice) + " The seeds below come from these runs' variances, so read them again "
          "from runs that converged. ")


def q5(ctx, readings):
  if not readings:
    return "Nothing to settle yet: no readings were made (no finished runs of the selected experiments)."
  open_ = [(e, v) for e, v in readings if v.verdict == stats.INCONCLUSIVE]
  if not open_:
    return "Nothing: every reading is decided."
  listed = [f"{label}: {_needed_text(v)}" for label, (_, v) in zip(reading_labels(open_), open_[:MAX_LISTED])]
  more = f"; and {len(open_) - MAX_LISTED} more" if len(open_) > MAX_LISTED else ""
  return (f"{len(open_)} of {len(readings)} readings are open after the family-wise adjustment ([the readings "
          f"section]({_anchor(READINGS_TITLE)})). " + _untrained_text(ctx, open_) + "What each needs to be decided "
          "with 80% power if the true difference is 0, from this study's variances (experiments/power.py): " + "; ".join(listed) + more
          + f". `transfusion-study --flagfile=... --study_stage=plan --pilot={ctx.cfg.out}` prints the table for "
          "every claim at 1x-10x the test images.")


def section(ctx, titles, readings):
  """The answer section's markdown lines. titles: {experiment id: its section title}; readings: [(id, Verdict)]
  after the family-wise (Holm) adjustment, as the readings section states them, so Q5's count of open readings
  is the complement of that section's `readings: K of N conclusive`."""
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
