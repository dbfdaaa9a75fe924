"""The study report: a header that names the data, the source, the test protocol and the statistics, then each
selected experiment's section in registry order, every reading with its verdict and numbers, each rule once, the
inputs of every analysis, and the runs.

Each reading says "holds", "does not hold" or "inconclusive" by one stated rule (experiments/stats.py), applied
exactly as printed; a surprising result is reported as it came out.
"""
import datetime
import os

from transfusion_tf import files
from transfusion_tf.experiments import common, plan, stats
from transfusion_tf.training import policy


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


def header(ctx, sources, wall_seconds):
  cfg = ctx.cfg
  synthetic = cfg.base.dataset.startswith("synthetic_")
  lines = ["# transfusion_tf study report", ""]
  lines.append(f"- **Data:** `{cfg.base.dataset}`: " + (
      "the embedded **synthetic** task (generated images, not real patients)" if synthetic else "real data") +
      f"; image size {cfg.base.image_size} px, {cfg.base.train_steps} steps, batch {cfg.base.batch_size}, "
      f"{cfg.seeds} seed(s).")
  if sources:
    lines.append(_source_line(ctx, sources))
  lines.append(f"- **Test protocol:** each run's checkpoint is picked on the validation split (best `{ctx.primary}`, "
               "ties to the earlier step); tables report that checkpoint on the held-out **test** split; curves and "
               "convergence measures are on validation.")
  lines.append("- **Uncertainty:** table cells are mean ± std over seeds [95% CI]; an AUC's CI adds the test-set "
               "(DeLong) variance to the seed variance (t with the seeds' degrees of freedom). Numbers are × 100.")
  device = next((res.result.get("device") for res in ctx.results.values()), None)
  if device:
    lines.append(f"- **Machine:** {device}.")
  run_secs = sum(res.result.get("seconds", 0.0) for res in ctx.results.values())
  lines.append(f"- **Wall time:** {wall_seconds / 60:.1f} min for this invocation; the finished runs' training "
               f"time adds up to {run_secs / 60:.1f} min. Generated {datetime.datetime.now():%Y-%m-%d %H:%M}.")
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
             "direction": f" Convergence is read on the validation curve area up to step {cfg.area_steps}.",
             "threshold": ""}
  return [f"- **{rule}**: {stats.RULES[rule]}" + numbers.get(rule, "") for rule in stats.RULES if rule in used]


def write_report(ctx, experiments, manifests, sources, wall_seconds):
  """Writes OUT/report.md (and the CSV tables and figures the sections write). Returns its path."""
  cfg = ctx.cfg
  chosen = set(cfg.experiments)
  lines = header(ctx, sources, wall_seconds)
  readings = []
  for exp in experiments:
    if not exp.selected(chosen):
      continue
    lines += [f"## {exp.title}", ""] + list(exp.section(ctx)) + [""]
    if exp.id in manifests:
      note = common.datapoint_notes(common.stage_records(ctx.analyses.get(exp.id)))
      lines += ([f"Datapoints: {note}.", ""] if note else []) + [_inputs_line(manifests[exp.id]), ""]
    if exp.id in chosen:
      readings += [(exp.id, v) for v in exp.readings(ctx)]
  lines += ["## Reading the results against the paper", ""]
  if readings:
    lines += [f"- {exp_id}: **{v.verdict}**: {v.text}" for exp_id, v in readings]
  else:
    lines.append("- No reading: not enough finished runs.")
  lines += ["", "Rules, each applied exactly as stated (95% intervals):", ""]
  lines += rules_text(cfg, {v.rule for _, v in readings}) + [""]
  lines += ["## Runs", "", common.table(
      ["run", "init source", "selected step", f"validation {ctx.primary}", f"test {ctx.primary}", "seconds"],
      [[r.name] + (_run_row(ctx, ctx.results[r]) if r in ctx.results else ["—", "unfinished", "—", "—", "—"])
       for r in ctx.runs]), ""]
  lines.append(f"TensorBoard: `tensorboard --logdir {os.path.join(cfg.out, 'tb')}`")
  path = os.path.join(cfg.out, "report.md")
  files.atomic_write(path, "\n".join(lines) + "\n")
  return path


def _run_row(ctx, res):
  sel = res.result.get("selected") or {}
  val = (sel.get("validation") or {}).get(ctx.primary)
  test = (sel.get("test") or {}).get(ctx.primary)
  return [(res.result.get("source_weights") or "—").split(":")[0][-60:], sel.get("step", "—"),
          "—" if val is None else f"{val:.4f}", "—" if test is None else f"{test:.4f}",
          f"{res.result.get('seconds', 0):.0f}"]
