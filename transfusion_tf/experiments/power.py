"""Power from a pilot study: for each claim, the seeds and test images it needs to be decidable.

`transfusion-study --study_stage=plan --pilot=DIR` reads a finished study (the pilot), reads every claim as its
report does, and for each one assumes the pilot's variances (seed variance, each run's own test noise, the test
noise all runs share: stats.Interval's parts) and a true difference of 0. A claim is decidable when it would reach
a decided verdict with 80% probability: an equivalence claim "holds" (the TOST shows |d| < margin), a directional
claim "does not hold" (the CI rules out an effect of the margin). stats.seeds_needed gives the runs per arm at 1x,
2x, 5x and 10x the pilot's test images; "more test images" means that no number of seeds is enough at that size
(the noise shared by all runs alone is too large). Claims read without an interval of this kind (F4's bootstrap
over runs, or a reading with no interval in the pilot) show "unknown".
"""
from transfusion_tf.experiments import common, stats

TEST_FACTORS = (1, 2, 5, 10)


def needed(verdict, factor):
  """Seeds per arm for one reading (the most any of its parts needs), "more test images", or None (unknown)."""
  parts = verdict.parts or (verdict,)
  out = 0
  for p in parts:
    if p.interval is None or p.interval.seed_var is None or p.margin is None:
      return None
    rule = "equivalence" if p.rule == "equivalence" else "direction"
    n = stats.seeds_needed(p.interval, p.margin, rule, test_factor=factor)
    if n is None:
      return "more test images"
    out = max(out, n)
  return out


def pilot_rows(ctx, experiments):
  """[(experiment id, claim, pilot verdict, mde text, [needed at each TEST_FACTORS])] for the selected
  experiments' readings of the pilot `ctx`."""
  rows = []
  chosen = set(ctx.cfg.experiments)
  for exp in experiments:
    if exp.id not in chosen:
      continue
    for v in exp.readings(ctx):
      claim = v.text.split(": difference")[0].split(": CI")[0]
      rows.append((exp.id, claim[:140], v.verdict, "—" if v.mde is None else f"{v.mde:.3g}",
                   [needed(v, f) for f in TEST_FACTORS]))
  return rows


def pilot_text(ctx, experiments):
  """The plan's power section for a pilot study, as lines of text."""
  n_test = None
  for res in ctx.results.values():
    preds = res.predictions
    key = ctx.primary if ctx.primary in preds else next(iter(preds), None)
    if key is not None:
      n_test = len(preds[key][1])
      break
  per_arm = {}
  for r in ctx.results:
    per_arm[(r.model, r.init, r.subset)] = per_arm.get((r.model, r.init, r.subset), 0) + 1
  seeds = "-".join(sorted({str(v) for v in per_arm.values()}, key=int)) or "0"
  lines = [f"Power from the pilot {ctx.cfg.out}: {len(ctx.results)} finished runs, {seeds} seed(s) per arm, "
           f"{'?' if n_test is None else n_test} test images. Runs per arm each claim needs to be decidable with "
           "80% power when the true difference is 0 (equivalence: 'holds'; direction: 'does not hold'), at "
           + ", ".join(f"{f}x" for f in TEST_FACTORS) + " the pilot's test images:", ""]
  header = ["exp", "claim", "pilot verdict (before Holm)", "mde"] + [f"seeds @ {f}x test" for f in TEST_FACTORS]
  rows = [[e, c, v, m] + ["unknown" if n is None else str(n) for n in needs]
          for e, c, v, m, needs in pilot_rows(ctx, experiments)]
  lines.append(common.table(header, rows) if rows else "No claims: the pilot has no finished runs of the "
               "selected experiments.")
  marked, finished, counts = common.marks_summary(ctx)
  if marked:
    lines += ["", f"Marked runs: {marked} of the pilot's {finished} finished runs ({counts}; the report's runs table). "
              "Claims about trained networks on them read 'inconclusive' whatever the seeds, and the variances "
              "above are theirs: train to the plateau first, then plan from those runs."]
  return lines
