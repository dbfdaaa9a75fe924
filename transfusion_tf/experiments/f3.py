"""F3: per stage, the SVCCA similarity of each trained network to its own initialisation.

Stage outputs are taken where models/stages.py names them: for the CBRs that is after the block's max-pooling
(conv1 ... conv5 are conv-BN-ReLU-pool blocks), for ResNet50 and InceptionV3 the block outputs.  Claims read (the
paper): (a) the lowest stage stays closest to its initialisation: per run, similarity(lowest) minus the mean
similarity of the stages above (its "lowest margin"), a t-interval over runs, directional (> 0); with a control for
what any initialisation would give: each random-init run's trained weights are also compared with an unrelated
initialisation (the next random seed's step0, kind "unrelated_init"), and the run's own-init lowest margin must exceed
its unrelated-init lowest margin (paired over runs, directional); (a) holds when both hold. (b) the
pretrained-minus-random gap is positive in the bottom two stages: a directional diff_interval per stage over runs
(paired by seed where the arms' counts differ or are 2 each, else Welch-Satterthwaite: stats.uses_pairing), holding
when both hold. Directional margin: --similarity_margin. The unit of every interval is the run.
Stage order always comes from the model's stage list (plan.model_stages), never from a dict's key order.
"""
from transfusion_tf.analysis import representation as rep
from transfusion_tf.experiments import common, plan, registry


CONTROL = "unrelated_init"


def runs(cfg):
  return [(m, init, None) for m in cfg.models for init in ("random", "pretrained")]


def analysis_runs(ctx):
  return ctx.finished(inits=("pretrained", "random"))


def analysis(ctx, finished):
  data = {"figure": "F3", "runs": []}
  for m in ctx.cfg.models:
    mine = [(ctx.results[r].dir, r.init) for r in finished if r.model == m]
    rnd = sorted((r for r in finished if r.model == m and r.init == "random" and r.subset is None),
                 key=lambda r: r.seed)
    if len(rnd) >= 2:  # The control: each random run's trained weights against the next seed's initialisation.
      mine += [(ctx.results[r].dir, CONTROL, ctx.results[rnd[(i + 1) % len(rnd)]].dir) for i, r in enumerate(rnd)]
    if mine:
      data["runs"] += rep.f3_similarities(mine, ctx.batches(m), stages=plan.model_stages(m),
                                          **common.analysis_kwargs(ctx.cfg))["runs"]
  return rep.figure_f3(data, f"{ctx.adir}/f3") if data["runs"] else None


def per_stage(ctx, model, kind):
  """{stage: [similarity per run]} of `kind` runs of `model`, in stage order, cells below the minimum
  datapoints per neuron left out."""
  data = ctx.analyses.get("F3") or {}
  out = {s: [] for s in plan.model_stages(model)}
  for r in data.get("runs", []):
    if r["model"] == model and r["kind"] == kind:
      for s in out:
        cell = r["per_stage"].get(s) or {}
        if r["similarity"].get(s) is not None and not cell.get("below_min"):
          out[s].append(r["similarity"][s])
  return out


def baseline(ctx, model, stage):
  """The mean permutation-baseline SVCCA of `stage` over the runs of `model` (the bias floor), as text."""
  data = ctx.analyses.get("F3") or {}
  vals = [((r["per_stage"].get(stage) or {}).get("baseline") or {}).get("svcca") for r in data.get("runs", [])
          if r["model"] == model]
  vals = [v for v in vals if v is not None]
  return f"{sum(vals) / len(vals):.3f}" if vals else "—"


def lowest_margin(ctx, model, kinds=("pretrained", "random"), by_run=False):
  """Per run of `kinds`: similarity of the lowest stage minus the mean of the stages above (usable cells only); with
  by_run, {run dir: value}."""
  data = ctx.analyses.get("F3") or {}
  stages = plan.model_stages(model)
  out, keyed = [], {}
  for r in data.get("runs", []):
    if r["model"] != model or r["kind"] not in kinds:
      continue
    vals = [r["similarity"].get(s) if not (r["per_stage"].get(s) or {}).get("below_min") else None for s in stages]
    if vals[0] is not None and any(v is not None for v in vals[1:]):
      above = [v for v in vals[1:] if v is not None]
      out.append(vals[0] - sum(above) / len(above))
      keyed[r.get("run", len(keyed))] = out[-1]
  return keyed if by_run else out


def control_gap(ctx, model):
  """Per random-init run with a control: its own-init lowest margin minus its unrelated-init lowest margin."""
  own = lowest_margin(ctx, model, kinds=("random",), by_run=True)
  other = lowest_margin(ctx, model, kinds=(CONTROL,), by_run=True)
  return [own[r] - other[r] for r in own if r in other]


def section(ctx):
  data = ctx.analyses.get("F3")
  if not data:
    return ["Needs finished random or pretrained runs."]
  header = ["model", "stage", "pretrained", "random", "pretrained − random", "permutation baseline"]
  rows = []
  for m in ctx.cfg.models:
    pre, rnd = per_stage(ctx, m, "pretrained"), per_stage(ctx, m, "random")
    for s in plan.model_stages(m):
      rows.append([m, s, common.fmt_interval(common.t_iv(pre[s]), scale=1, digits=3, bounds=common.AUC_BOUNDS),
                   common.fmt_interval(common.t_iv(rnd[s]), scale=1, digits=3, bounds=common.AUC_BOUNDS),
                   common.fmt_interval(common.diff_iv(pre[s], rnd[s]), scale=1, digits=3, signed=True,
                                       bounds=common.DIFF_BOUNDS),
                   baseline(ctx, m, s)])
  return [common.figure_link(ctx, "F3", data["png"]), "",
          "SVCCA(init, trained) per stage, mean ± std over runs [95% CI]; the permutation baseline is the same "
          "similarity with one side's datapoints shuffled. CBR stages are read after each block's max-pooling.", "",
          common.table(header, rows)]


def readings(ctx):
  out = []
  if not ctx.analyses.get("F3"):
    return out
  for m in ctx.cfg.models:
    stages = plan.model_stages(m)
    low, gap = lowest_margin(ctx, m), control_gap(ctx, m)
    margin = common.direction_margin(ctx.cfg, "similarity")
    parts = [common.read_direction(common.t_iv(low), what=(
        f"{stages[0]} SVCCA to own init minus the mean of the stages above"), margin=margin),
        common.read_direction(common.t_iv(gap), what=(
            f"control: that margin to own init minus the same margin to an unrelated init ({len(gap)} random "
            "runs)"), margin=margin)]
    verdict = common.all_of(m, parts, f"the paper: the lowest layers stay closest to init ({len(low)} runs)")
    out.append(common.gate_trained(ctx, verdict, common.arm_runs(ctx, m, ("pretrained", "random"))))
    pre, rnd = per_stage(ctx, m, "pretrained"), per_stage(ctx, m, "random")
    parts = [common.read_direction(common.diff_iv(pre[s], rnd[s]), what=f"{s} pretrained − random", margin=margin)
             for s in stages[:2]]
    verdict = common.all_of(m, parts, "the paper: the pretrained − random gap is positive in the bottom two stages")
    out.append(common.gate_trained(ctx, verdict, common.arm_runs(ctx, m, ("pretrained", "random"))))
  return out


EXPERIMENT = registry.register(registry.Experiment(
    id="F3", title="F3: similarity to initialisation per stage", runs=runs, section=section, readings=readings,
    analysis=analysis, analysis_runs=analysis_runs))
