"""The study report: a header that names the data, the source, the test protocol and the statistics, then each
selected experiment's section in registry order, every reading with its verdict and numbers, each rule once, the
inputs of every analysis, and the runs.

Each reading says "holds", "does not hold" or "inconclusive" by one stated rule (experiments/stats.py), applied
exactly as printed; a surprising result is reported as it came out.
"""
import datetime
import os

from transfusion_tf import files
from transfusion_tf.experiments import answer, common, plan, stats
from transfusion_tf.training import plateau, policy


def _source_line(ctx, sources):
  """The pretrained source per model, with its source accuracy and conv1 orientation selectivity when it was
  pretrained here, so a reader can judge the stand-in."""
  from transfusion_tf.analysis import representation as rep  # pylint: disable=import-outside-toplevel
  from transfusion_tf.training import rundir  # pylint: disable=import-outside-toplevel
  cfg = ctx.cfg
  desc = []
  for m, s in sources.items():
    if s == "pretrain":
      text = (f"{m}: **synthetic source task standing in for ImageNet** (no ImageNet weights were available; "
              f"pretrained here for {cfg.pretrain_steps} steps at {plan.pretrain_config(cfg, m).image_size} px")
      res = rundir.read_json(os.path.join(plan.pretrain_dir(cfg, m), "result.json"))
      if res:
        final = res["final"]
        top1, chance = final.get("accuracy", float("nan")), 1 / ctx.source_classes
        text += (f"; source top-1 {top1 * 100:.1f}%, top-5 "
                 f"{final.get('top5_accuracy', float('nan')) * 100:.1f}%, chance {100 * chance:.1f}%")
        if not top1 >= policy.SOURCE_TARGET_FACTOR * chance:
          text += (f", **below {policy.SOURCE_TARGET_FACTOR:g}x chance: a weak stand-in**, read this model's "
                   "transfer results with that in mind")
        try:
          model, _ = rundir.load_run_model(plan.pretrain_dir(cfg, m), "final")
          sel = rep.orientation_selectivity(rep.conv1_filters(model)).mean()
          ref = rep.selectivity_references(rep.conv1_filters(model).shape)["random"]
          text += f"; conv1 orientation selectivity {sel:.2f} (He-normal random {ref:.2f})"
        except Exception:  # pylint: disable=broad-except
          pass  # The numbers above still stand; the weights may be from an older layout.
      desc.append(text + ")")
    elif s == "imagenet":
      desc.append(f"{m}: ImageNet (Keras cache)")
    else:
      desc.append(f"{m}: `{s}`")
  return "- **Pretrained source:** " + "; ".join(desc) + "."


def duration(seconds):
  """'N s' under a minute, else 'M.M min' (a report-only re-run took seconds and read '0.0 min')."""
  return f"{seconds:.0f} s" if seconds < 59.5 else f"{seconds / 60:.1f} min"


def header(ctx, sources, wall_seconds):
  cfg = ctx.cfg
  synthetic = cfg.base.dataset.startswith("synthetic_")
  lines = ["# transfusion_tf study report", ""]
  lines.append(f"- **Data:** `{cfg.base.dataset}`: " + (
      "the embedded **synthetic** task (generated images, not real patients)" if synthetic else "real data") +
      f"; image size {cfg.base.image_size} px, {cfg.base.train_steps} steps, batch {cfg.base.batch_size}, "
      f"learning rate {cfg.describe_learning_rates()}, {cfg.describe_seeds()}.")
  if sources:
    lines.append(_source_line(ctx, sources))
  lines.append("- **Stopping:** " + plateau.describe(cfg.base.plateau_patience, cfg.base.plateau_min_delta or 0.0,
                                                     cfg.base.min_train_steps) + ".")
  lines.append(f"- **Test protocol:** each run's checkpoint is picked on the validation split (best `{ctx.primary}`, "
               "ties to the earlier step); tables report that checkpoint on the held-out **test** split; curves and "
               "convergence measures are on validation.")
  lines.append("- **Uncertainty:** table cells are mean ± std over seeds [95% CI]. An AUC's CI is the seed spread "
               "plus the test-set noise the runs share (their joint DeLong covariance, each run's own test noise "
               "counted once: experiments/stats.py), each part with its own quantile: the seed spread's t, the "
               "shared test part's normal one. The seed spread's t: n − 1 degrees of freedom for one arm, "
               "Welch-Satterthwaite between equal arms of 3 or more seeds, Scheffé's pairing by seed otherwise. "
               "Numbers are × 100.")
  design_note = stats.pairing_note(plan.arm_seed_counts(ctx.runs))
  if design_note:
    lines[-1] += " " + design_note
  patients = common.patients_note(ctx)
  if patients:
    lines.append(f"- **Test images:** {patients}.")
  device = next((res.result.get("device") for res in ctx.results.values()), None)
  if device:
    lines.append(f"- **Machine:** {device}.")
  run_secs = sum(res.result.get("seconds", 0.0) for res in ctx.results.values())
  lines.append(f"- **Wall time:** {duration(wall_seconds)} for this invocation; the finished runs' training "
               f"time adds up to {duration(run_secs)}. Generated {datetime.datetime.now():%Y-%m-%d %H:%M}.")
  for r, why in ctx.damaged.items():
    lines.append(f"- **Left out as unfinished:** {r.name}: {why}.")
  missing = [r.name for r in ctx.runs if r not in ctx.results]
  lines.append(f"- **Runs:** {len(ctx.results)} of {len(ctx.runs)} finished." + (
      f" Missing (left out): {', '.join(missing[:8])}" + (" ..." if len(missing) > 8 else "") + "." if missing
      else ""))
  if synthetic:
    lines += ["", "> These numbers come from synthetic data and a synthetic source task. They test the tool and "
              "the direction of the paper's claims, not the paper's values; the paper's numbers are beside ours "
              "for reference only."]
  return lines + [""]


def _inputs_line(manifest):
  runs = manifest.get("runs") or []
  if not runs:
    return "Inputs: no finished runs."
  return "Inputs: " + ", ".join(f"{r['name']} (step {r['step']})" for r in runs) + "."


def rules_text(cfg, used):
  """The statement of each rule used, once, with its numbers."""
  numbers = {"equivalence": f" Margin: ±{cfg.equivalence_margin * 100:.1f} AUC points (--equivalence_margin); "
                            f"F2's similarity margin ±{cfg.similarity_margin:.2f} (--similarity_margin).",
             "direction": f" Directional margins: {cfg.equivalence_margin * 100:.1f} AUC points for AUC differences "
                          f"(--equivalence_margin), {cfg.similarity_margin:.2f} for SVCCA (--similarity_margin), "
                          f"{common.FRACTION_MARGIN:.2f} for normalised curve areas and conv1 statistics. Convergence "
                          f"is read on the normalised validation curve area up to step {cfg.area_steps}.",
             "threshold": "",
             "family": f" Family: the {{n}} readings of this report with a test; rate {stats.FAMILY_ALPHA:.0%}.",
             "trained": " " + "; ".join(f"'{k}': {v}" for k, v in common.RUN_RULES.items()) + "."}
  return [f"- **{rule}**: {stats.RULES[rule]}" + numbers.get(rule, "") for rule in stats.RULES if rule in used]


def write_report(ctx, experiments, manifests, sources, wall_seconds):
  """Writes OUT/report.md (and the CSV tables and figures the sections write). Returns its path."""
  cfg = ctx.cfg
  chosen = set(cfg.experiments)
  body, readings, titles = [], [], {}
  for exp in experiments:
    if not exp.selected(chosen):
      continue
    titles[exp.id] = exp.title
    body += [f"## {exp.title}", ""] + list(exp.section(ctx)) + [""]
    if exp.id in manifests:
      note = common.datapoint_notes(common.stage_records(ctx.analyses.get(exp.id)))
      body += ([f"Datapoints: {note}.", ""] if note else []) + [_inputs_line(manifests[exp.id]), ""]
    if exp.id in chosen:
      readings += [(exp.id, v) for v in exp.readings(ctx)]
  adjusted, adjusted_p = stats.holm([v for _, v in readings])
  lines = (header(ctx, sources, wall_seconds)
           + answer.section(ctx, titles, [(exp_id, v) for (exp_id, _), v in zip(readings, adjusted)]) + body)
  lines += [f"## {answer.READINGS_TITLE}", ""]
  tested = sum(p is not None for p in adjusted_p)
  if readings:
    lines += [f"- {exp_id}: **{v.verdict}**: {v.text}{_power_text(v, p)}"
              for (exp_id, _), v, p in zip(readings, adjusted, adjusted_p)]
    conclusive = sum(v.verdict != stats.INCONCLUSIVE for v in adjusted)
    lines += ["", f"Verdicts after Holm-Bonferroni over the {tested} readings with a test (family-wise rate of a wrong "
              f"decided verdict at most {stats.FAMILY_ALPHA:.0%}); 'mde' is the minimum detectable effect at 80% "
              "power from the observed standard error, in the reading's units.", "",
              f"readings: {conclusive} of {len(adjusted)} conclusive"]
  else:
    lines.append("- No reading: not enough finished runs.")
  used = {v.rule for _, v in readings} | ({"family"} if readings else set())
  used |= {"trained"} if any(exp_id in TRAINED for exp_id, _ in readings) else set()
  lines += ["", "Rules, each applied exactly as stated (95% intervals):", ""]
  lines += [t.replace("{n}", str(tested)) for t in rules_text(cfg, used)] + [""]
  lines += ["## Runs", "", common.table(
      ["run", "init source", "stopped", "selected step", f"validation {ctx.primary}", f"test {ctx.primary} [95% CI]",
       "seconds", "marks"],
      [[r.name] + (_run_row(ctx, ctx.results[r]) if r in ctx.results else ["—", "—", "unfinished", "—", "—", "—", "—"])
       for r in ctx.runs]), "",
      "Marks: " + "; ".join(f"**{k}**: {v}" for k, v in common.RUN_RULES.items()) + ".", ""]
  lines.append(f"TensorBoard: `tensorboard --logdir {os.path.join(cfg.out, 'tb')}`")
  path = os.path.join(cfg.out, "report.md")
  files.atomic_write(path, "\n".join(lines) + "\n")
  return path


TRAINED = ("T1", "T2", "T3", "SL", "F2", "F3", "F4", "MV", "WT", "GB")  # Readings that go through gate_trained.


def _power_text(v, adjusted_p):
  parts = []
  if v.unit:
    parts.append(f"unit: {v.unit}")
  if v.mde is not None:
    parts.append(f"mde {v.mde:.3g}")
  if adjusted_p is not None:
    parts.append(f"Holm p {adjusted_p:.3g}")
  return f" ({'; '.join(parts)})" if parts else ""


def _run_row(ctx, res):
  sel = res.result.get("selected") or {}
  val = (sel.get("validation") or {}).get(ctx.primary)
  test = (sel.get("test") or {}).get(ctx.primary)
  ci = res.auc_ci(ctx.primary) if test is not None else None
  test_text = "—" if test is None else f"{test:.4f}" + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "")
  note = res.labels_note(ctx.primary) if ci else None
  if note:
    test_text += f" ({note})"
  stop = res.result.get("stopped") or {}
  stopped = f"{stop['reason']} at {stop['step']}" if stop.get("reason") else "—"
  return [(res.result.get("source_weights") or "—").split(":")[0][-60:], stopped, sel.get("step", "—"),
          "—" if val is None else f"{val:.4f}", test_text, f"{res.result.get('seconds', 0):.0f}",
          ", ".join(common.run_marks(ctx, res)) or "—"]
