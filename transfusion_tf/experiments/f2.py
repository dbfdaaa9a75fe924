"""F2: SVCCA similarity of the top two stages of trained networks: pretrained-vs-random pairs against the
random-vs-random baseline (pairs of different seeds).

Claims read (the paper): for the large models (ResNet50, InceptionV3) pretrained-vs-random similarity is below the
random-vs-random baseline (a directional test); for the small CBRs there is little difference (an equivalence test
with --similarity_margin). The noise is the spread across pairs (Welch interval over pairs; pairs that share a run
are not independent, so the interval is optimistic: stated in the report). Pairs with a stage below the minimum
datapoints per neuron are left out of the readings.
"""
from transfusion_tf.analysis import representation as rep
from transfusion_tf.experiments import common, registry

LARGE = ("resnet50", "inceptionv3")


def runs(cfg):
  return [(m, init, None) for m in cfg.models for init in ("random", "pretrained")]


def analysis_runs(ctx):
  return ctx.finished(inits=("random", "pretrained"))


def pairs_of(ctx, finished, model):
  """[(run_a dir, run_b dir, kind)]: every pretrained x random pair and every pair of random seeds."""
  rnd = [r for r in finished if r.model == model and r.init == "random"]
  pre = [r for r in finished if r.model == model and r.init == "pretrained"]
  d = lambda r: ctx.results[r].dir  # noqa: E731
  return ([(d(p), d(r), "pretrained_vs_random") for p in pre for r in rnd]
          + [(d(a), d(b), "random_vs_random") for i, a in enumerate(rnd) for b in rnd[i + 1:]])


def analysis(ctx, finished):
  data = {"figure": "F2", "pairs": []}
  for m in ctx.cfg.models:
    pairs = pairs_of(ctx, finished, m)
    if pairs:
      data["pairs"] += rep.f2_similarities(pairs, ctx.batches(m), **common.analysis_kwargs(ctx.cfg))["pairs"]
  return rep.figure_f2(data, f"{ctx.adir}/f2") if data["pairs"] else None


def _usable(pair):
  return not any(v.get("below_min") for v in pair["per_stage"].values())


def similarities(ctx, model, kind):
  """Top-two-stage similarities of the usable pairs of `kind`, and their permutation baselines."""
  data = ctx.analyses.get("F2") or {}
  pairs = [p for p in data.get("pairs", []) if p["model"] == model and p["kind"] == kind and _usable(p)]
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
    rows.append([m, common.fmt_interval(common.t_iv(pr), scale=1, digits=3),
                 common.fmt_interval(common.t_iv(rr), scale=1, digits=3),
                 f"{sum(base) / len(base):.3f}" if base else "—", f"{len(pr)} + {len(rr)}"])
  return [common.figure_link(ctx, "F2", data["png"]), "",
          "Mean SVCCA of the top two stages ± std over pairs [95% CI]; the permutation baseline is the same "
          "similarity with one side's datapoints shuffled (the bias floor of this many datapoints).", "",
          common.table(header, rows)]


def readings(ctx):
  out = []
  if not ctx.analyses.get("F2"):
    return out
  for m in ctx.cfg.models:
    pr, _ = similarities(ctx, m, "pretrained_vs_random")
    rr, _ = similarities(ctx, m, "random_vs_random")
    iv = common.diff_iv(rr, pr)
    if m in LARGE:
      out.append(common.read_direction(iv, what=(
          f"{m}: SVCCA random-vs-random minus pretrained-vs-random over {len(rr)} + {len(pr)} usable pairs (the "
          "paper: "
          "pretrained-vs-random lies below the baseline for large models)")))
    else:
      out.append(common.read_equivalence(iv, ctx.cfg.similarity_margin, what=(
          f"{m}: SVCCA random-vs-random minus pretrained-vs-random over {len(rr)} + {len(pr)} usable pairs (the "
          "paper: "
          "little difference for small models)")))
  return out


EXPERIMENT = registry.register(registry.Experiment(
    id="F2", title="F2: similarity of the top two stages", runs=runs, section=section, readings=readings,
    analysis=analysis, analysis_runs=analysis_runs))
