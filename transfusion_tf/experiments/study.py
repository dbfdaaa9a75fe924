"""The study runner: one flagfile in, every pretraining run, training run, analysis and the report out.

Layout of the output folder OUT:
  OUT/plan.json                         the runs, with their keys and directories
  OUT/pretrain/<model>/                 source pretraining (when no real pretrained weights are given)
  OUT/runs/<model>/<init>/seed<k>[_n<N>]  one training run each (see training/rundir.py)
  OUT/tb/<run name>/                    TensorBoard: `tensorboard --logdir OUT/tb` shows every run
  OUT/analysis/<figure>.png|json        F2-F5 and the curve figures
  OUT/report.md                         the report (experiments/report.py)

Resumable at every level: a finished run (result.json) is skipped, an unfinished one resumes from its checkpoint,
a finished analysis (its JSON) is reused; `force` redoes everything. `shard=(i, n)` trains every n-th run only, so
a sweep spreads over processes or machines; the analyses and the report then run once, without a shard.
"""
import dataclasses
import functools
import math
import os
import time

import keras
import numpy as np

from transfusion_tf import models
from transfusion_tf.data import tasks
from transfusion_tf.errors import UsageError
from transfusion_tf.models import weights as weights_lib
from transfusion_tf.training import rundir, trainer

EXPERIMENTS = ("T1", "T2", "T3", "F2", "F3", "F4", "F5", "MV", "WT", "SL", "GB")
# Init labels the study knows. gabor_low / gabor_high carry the Gabor frequency in the label.
SOURCE_SCHEMES = ("pretrained", "meanvar", "transfuse", "slim")
F4_MODELS = ("resnet50", "cbr_small")


def figure_models(cfg):
  """Models for F4/F5: ResNet50 and CBR-Small as in the paper; without CBR-Small, the study's first CBR."""
  chosen = [m for m in F4_MODELS if m in cfg.models]
  if "cbr_small" not in chosen:
    chosen += [m for m in cfg.models if m.startswith("cbr_")][:1]
  return chosen or list(cfg.models)[:1]


@dataclasses.dataclass
class StudyConfig:
  """What a study flagfile names. `base` is the TrainConfig every run starts from (training, data, model flags);
  `source_weights` is "auto" (ImageNet from the Keras cache where present, else synthetic-source pretraining),
  "synthetic" (always pretrain), "imagenet", or a weights path."""
  out: str
  base: trainer.TrainConfig
  models: tuple = ("cbr_tiny",)
  inits: tuple = ("random", "pretrained")
  seeds: int = 1
  experiments: tuple = ("T1",)
  source_weights: str = "auto"
  pretrain_steps: int = trainer.PRETRAIN_DEFAULTS["train_steps"]
  pretrain_image_size: int = None  # None: trainer.PRETRAIN_DEFAULTS' 32 px, or the model's minimum if larger.
  pretrain_num_train: int = 4000
  pretrain_learning_rate: float = trainer.PRETRAIN_DEFAULTS["learning_rate"]
  pretrain_weight_decay: float = trainer.PRETRAIN_DEFAULTS["weight_decay"]
  small_data_subset: int = 5000
  wt_stages: tuple = None
  analysis_images: int = 256
  analysis_max_positions: int = 2000
  force: bool = False
  shard: tuple = (0, 1)
  width_multipliers: dict = dataclasses.field(default_factory=dict)

  def model_kwargs(self, model):
    """build_model kwargs for `model`: the base flags with this model's width multiplier, if the study sets one."""
    kw = {k: v for k, v in self.base.model_kwargs.items() if k != "slim"}
    if model in self.width_multipliers:
      kw["width_multiplier"] = self.width_multipliers[model]
    return kw


@dataclasses.dataclass(frozen=True)
class Run:
  """One training run of the sweep."""
  model: str
  init: str          # init label: random, pretrained, meanvar, transfuse:<stage>, slim, gabor_low, gabor_high
  seed: int
  subset: int = None  # T3's small-data training size

  @property
  def name(self):
    label = self.init.replace(":", "_")
    return f"{self.model}/{label}/seed{self.seed}" + (f"_n{self.subset}" if self.subset else "")

  def scheme(self):
    """(init scheme for initialize, gabor frequency)."""
    if self.init.startswith("gabor"):
      return "gabor", (self.init.split("_")[1] if "_" in self.init else "low")
    return self.init, "low"

  def needs_source(self):
    return self.scheme()[0].split(":")[0] in SOURCE_SCHEMES


def task_of(cfg):
  return tasks.DATASETS.get(cfg.base.dataset)


@functools.lru_cache(maxsize=None)
def default_wt_stages(model_name):
  """The WT sweep's stages: none, then every stage bottom-up but the pool, then all (full transfer)."""
  model = models.build_model(model_name, 2, (max(models.MIN_SIZE[model_name], 32),) * 2 + (3,))
  body = [s for s in models.stage_names(model) if s != "pool"]
  keras.backend.clear_session()
  return ("none",) + tuple(body)


def wt_stages(cfg, model_name):
  """The WT stages of `model_name`: --wt_stages where they exist in this architecture, else the default list."""
  known = default_wt_stages(model_name)
  return tuple(s for s in cfg.wt_stages if s in known) if cfg.wt_stages else known


def plan_runs(cfg):
  """Returns the ordered, de-duplicated list of Runs the configured experiments need."""
  seeds = range(cfg.seeds)
  runs = []

  def add(model, init, subset=None):
    for s in seeds:
      runs.append(Run(model, init, s, subset))

  exps = set(cfg.experiments)
  unknown = exps - set(EXPERIMENTS)
  if unknown:
    raise UsageError(f"--experiments has unknown ids {sorted(unknown)}; known: {', '.join(EXPERIMENTS)}")
  for model in cfg.models:
    models.check_model_name(model)
    for init in cfg.inits:
      add(model, init)
    if exps & {"T1", "T2", "F2", "F3", "F4", "F5"}:
      add(model, "random")
      add(model, "pretrained")
    if "T3" in exps:
      add(model, "random", cfg.small_data_subset)
      add(model, "pretrained", cfg.small_data_subset)
    if "MV" in exps:
      for init in ("random", "meanvar", "pretrained"):
        add(model, init)
    if "WT" in exps:
      for stage in wt_stages(cfg, model):
        add(model, "random" if stage == "none" else "pretrained" if stage == "all" else f"transfuse:{stage}")
      add(model, "pretrained")
    if "GB" in exps:
      for init in ("random", "gabor_low", "gabor_high", "transfuse:conv1" if model != "inceptionv3" else
                   "transfuse:stem", "pretrained"):
        add(model, init)
  if "SL" in exps:
    if "resnet50" not in cfg.models:
      raise UsageError("--experiments=SL needs resnet50 in --study_models")
    for init in ("random", "slim", "pretrained"):
      add("resnet50", init)
  seen, ordered = set(), []
  for r in runs:
    if r not in seen:
      seen.add(r)
      ordered.append(r)
  return ordered


def run_dir(cfg, run):
  return os.path.join(cfg.out, "runs", run.name)


def run_config(cfg, run, weights):
  """The TrainConfig of `run`: the study's base with this run's model, init, seed, source and data subset."""
  scheme, freq = run.scheme()
  model_kwargs = cfg.model_kwargs(run.model)
  model_kwargs["slim"] = scheme == "slim"
  data_kwargs = dict(cfg.base.data_kwargs)
  if run.subset:
    data_kwargs["train_subset"] = run.subset
  return dataclasses.replace(cfg.base, model=run.model, init=scheme, seed=run.seed, gabor_frequency=freq,
                             weights=weights if run.needs_source() else None, model_kwargs=model_kwargs,
                             data_kwargs=data_kwargs)


# -- pretrained sources --------------------------------------------------------------------------------------------


def imagenet_available(model):
  return model in weights_lib.IMAGENET_FILES and os.path.exists(
      os.path.join(weights_lib.keras_cache_dir(), weights_lib.IMAGENET_FILES[model]))


def source_plan(cfg, runs):
  """{model: ("imagenet" | path | "pretrain")} for every model with a run that needs source weights."""
  out = {}
  for model in sorted({r.model for r in runs if r.needs_source()}):
    sw = cfg.source_weights
    if sw == "auto":
      out[model] = "imagenet" if imagenet_available(model) else "pretrain"
    elif sw == "synthetic":
      out[model] = "pretrain"
    elif sw == "imagenet":
      if not imagenet_available(model):
        weights_lib.resolve_weights_path(model, "imagenet")  # Raises the UsageError naming the file.
      out[model] = "imagenet"
    else:
      if not os.path.exists(os.path.expanduser(sw)):
        raise UsageError(f"--source_weights file not found: {sw}")
      out[model] = sw
  return out


def pretrain_dir(cfg, model):
  return os.path.join(cfg.out, "pretrain", model)


def pretrained_path(cfg, model):
  return os.path.join(pretrain_dir(cfg, model), "pretrained.weights.h5")


def pretrain_config(cfg, model):
  """TrainConfig for synthetic-source pretraining of `model` (same widths as the study's models, full width for
  Slim, whose lower blocks are copied from a full ResNet50)."""
  base = cfg.base
  model_kwargs = cfg.model_kwargs(model)
  data_kwargs = {"num_train": cfg.pretrain_num_train, "num_val": 500, "num_test": 100}
  if base.data_kwargs.get("cache_dir"):
    data_kwargs["cache_dir"] = base.data_kwargs["cache_dir"]
  steps = cfg.pretrain_steps
  return dataclasses.replace(
      base, model=model, dataset="synthetic_source", init="random", weights=None, seed=0,
      image_size=cfg.pretrain_image_size or max(trainer.PRETRAIN_DEFAULTS["image_size"], models.MIN_SIZE[model]),
      train_steps=steps, eval_every=max(1, steps // 2),
      learning_rate=cfg.pretrain_learning_rate, weight_decay=cfg.pretrain_weight_decay, convergence_auc=None,
      optimizer=trainer.PRETRAIN_DEFAULTS["optimizer"], lr_schedule=trainer.PRETRAIN_DEFAULTS["lr_schedule"],
      model_kwargs=model_kwargs, data_kwargs=data_kwargs)


# -- the sweep -----------------------------------------------------------------------------------------------------


def is_done(path):
  return os.path.exists(os.path.join(path, "result.json"))


def estimate_step_seconds(cfg, model):
  """Seconds per training step of `model` at the study's size and batch, measured on a few bare steps."""
  import tensorflow as tf
  keras.mixed_precision.set_global_policy("float32")
  size, bs = cfg.base.image_size, cfg.base.batch_size
  m = models.build_model(model, 5, (size, size, 3), **cfg.model_kwargs(model))
  opt = keras.optimizers.Adam(1e-3)
  x = tf.random.normal((bs, size, size, 3))
  y = tf.zeros((bs,), tf.int32)

  @tf.function
  def step():
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, m(x, training=True)))
    opt.apply_gradients(zip(tape.gradient(loss, m.trainable_variables), m.trainable_variables))
    return loss

  t = time.time()
  step()
  trace = time.time() - t
  t = time.time()
  for _ in range(3):
    step()
  sec = (time.time() - t) / 3
  keras.backend.clear_session()
  return sec, trace


def _fmt_seconds(s):
  return time.strftime("%H:%M:%S", time.gmtime(max(0, s)))


def print_plan(cfg, runs, sources, shard_runs):
  """Prints N runs, which are done, and an estimated time from measured steps; returns the estimate in s."""
  done = [r for r in runs if is_done(run_dir(cfg, r))]
  to_pretrain = [m for m, s in sources.items() if s == "pretrain" and not os.path.exists(pretrained_path(cfg, m))]
  print(f"study plan: {len(runs)} training runs ({len(done)} done), {len(to_pretrain)} source pretraining runs "
        f"to do; shard {cfg.shard[0]}/{cfg.shard[1]} holds {len(shard_runs)} runs", flush=True)
  for m, s in sources.items():
    what = ("pretraining on the embedded synthetic source task, standing in for ImageNet (no ImageNet weights "
            "here)") if s == "pretrain" else ("ImageNet weights from the Keras cache" if s == "imagenet" else s)
    print(f"  source weights for {m}: {what}", flush=True)
  per_model = {}
  todo = [r for r in shard_runs if not is_done(run_dir(cfg, r))]
  estimate = 0.0
  for m in sorted({r.model for r in todo} | set(to_pretrain)):
    per_model[m] = estimate_step_seconds(cfg, m)
  evals = (cfg.base.train_steps // cfg.base.eval_every + 1)
  # Each run also builds its model and traces its train and eval steps: about three first-step times.
  for r in todo:
    sec, trace = per_model[r.model]
    estimate += sec * (cfg.base.train_steps + evals * 4) + 3 * trace
  for m in to_pretrain:
    sec, trace = per_model[m]
    # Step time scales about with the pixel count; pretraining usually runs at another size.
    scale = (pretrain_config(cfg, m).image_size / cfg.base.image_size) ** 2
    estimate += sec * scale * cfg.pretrain_steps + 3 * trace
  if per_model:
    steps = ", ".join(f"{m} {s * 1000:.0f} ms/step" for m, (s, _) in per_model.items())
    print(f"  measured: {steps}; estimated training time for this shard {_fmt_seconds(estimate)} (analyses come after)", flush=True)
  return estimate


def ensure_sources(cfg, sources):
  """Runs (or resumes) synthetic-source pretraining where needed. Returns {model: weights for the runs}."""
  out = {}
  for model, src in sources.items():
    if src != "pretrain":
      out[model] = src
      continue
    path = pretrained_path(cfg, model)
    if not os.path.exists(path) or cfg.force:
      print(f"== pretraining {model} on synthetic_source (standing in for ImageNet)", flush=True)
      trainer.pretrain(pretrain_config(cfg, model), pretrain_dir(cfg, model), path, overwrite=cfg.force,
                       tb_dir=os.path.join(cfg.out, "tb", "pretrain", model))
      keras.backend.clear_session()
    out[model] = path
  return out


def run_sweep(cfg, runs):
  """Pretrains and trains every run of this shard of `runs` (resuming). Returns the source plan per model."""
  i, n = cfg.shard
  shard_runs = [r for k, r in enumerate(runs) if k % n == i]
  sources = source_plan(cfg, runs)
  rundir.atomic_write_json(os.path.join(_mkdir(cfg.out), "plan.json"),
                           {"runs": [dict(dataclasses.asdict(r), name=r.name, dir=run_dir(cfg, r)) for r in runs],
                            "sources": sources})
  estimate = print_plan(cfg, runs, sources, shard_runs)
  t0 = time.time()
  weights = ensure_sources(cfg, {m: s for m, s in sources.items()
                                 if any(r.model == m and r.needs_source() for r in shard_runs)})
  for k, r in enumerate(shard_runs, 1):
    path = run_dir(cfg, r)
    if is_done(path) and not cfg.force:
      continue
    print(f"== run {k}/{len(shard_runs)}: {r.name}  (elapsed {_fmt_seconds(time.time() - t0)}, "
          f"estimate {_fmt_seconds(estimate)})", flush=True)
    trainer.train(run_config(cfg, r, weights.get(r.model)), path, overwrite=cfg.force,
                  tb_dir=os.path.join(cfg.out, "tb", r.name.replace("/", "_")))
    keras.backend.clear_session()
  return sources


def _mkdir(path):
  os.makedirs(path, exist_ok=True)
  return path


def analysis_batches(cfg, model):
  """A list of preprocessed validation image batches for `model` (the same images for every model)."""
  from transfusion_tf.data import pipeline
  base = cfg.base
  bs = 32
  data = pipeline.build_data(base.dataset, image_size=base.image_size, batch_size=bs, model_name=model,
                             seed=0, channels=3, **base.data_kwargs)
  n = math.ceil(cfg.analysis_images / bs)
  return [np.asarray(images) for images, _, _ in data.eval("validation").take(n)]


# -- analyses ------------------------------------------------------------------------------------------------------


def _runs_of(runs, model, init, full=True):
  return [r for r in runs if r.model == model and r.init == init and (r.subset is None) == full]


def _cached(path, force, compute):
  if os.path.exists(path) and not force:
    return rundir.read_json(path)
  t = time.time()
  out = compute()
  print(f"  {os.path.basename(path)[:-5].upper()} computed in {time.time() - t:.0f} s", flush=True)
  return out


def run_analyses(cfg, runs):
  """Computes F2-F5 for the configured experiments from finished runs; returns {figure id: JSON dict}."""
  from transfusion_tf.analysis import representation as rep
  exps = set(cfg.experiments)
  adir = _mkdir(os.path.join(cfg.out, "analysis"))
  finished = [r for r in runs if is_done(run_dir(cfg, r))]
  out = {}
  batches = {}

  def batches_for(model):
    if model not in batches:
      batches[model] = analysis_batches(cfg, model)
    return batches[model]

  kw = dict(max_positions=cfg.analysis_max_positions)
  if "F2" in exps:
    def f2():
      pairs = []
      for model in cfg.models:
        rnd, pre = _runs_of(finished, model, "random"), _runs_of(finished, model, "pretrained")
        pairs += [(run_dir(cfg, p), run_dir(cfg, r), "pretrained_vs_random") for p, r in zip(pre, rnd)]
        pairs += [(run_dir(cfg, a), run_dir(cfg, b), "random_vs_random")
                  for i, a in enumerate(rnd) for b in rnd[i + 1:]]
      if not pairs:
        return None
      data = {"figure": "F2", "pairs": []}
      for model in cfg.models:
        mine = [p for p in pairs if f"/runs/{model}/" in p[0]]
        if mine:
          data["pairs"] += rep.f2_similarities(mine, batches_for(model), **kw)["pairs"]
      return rep.figure_f2(data, os.path.join(adir, "f2"))
    out["F2"] = _cached(os.path.join(adir, "f2.json"), cfg.force, f2)
  if "F3" in exps:
    def f3():
      data = {"figure": "F3", "runs": []}
      for model in cfg.models:
        mine = [run_dir(cfg, r) for init in ("pretrained", "random") for r in _runs_of(finished, model, init)]
        if mine:
          data["runs"] += rep.f3_similarities(mine, batches_for(model), **kw)["runs"]
      return rep.figure_f3(data, os.path.join(adir, "f3")) if data["runs"] else None
    out["F3"] = _cached(os.path.join(adir, "f3.json"), cfg.force, f3)
  if "F4" in exps:
    def f4():
      data = {"figure": "F4", "stage": "conv1", "points": []}
      for model in figure_models(cfg):
        mine = [run_dir(cfg, r) for init in ("random", "pretrained") for r in _runs_of(finished, model, init)]
        pairs = [(a, b) for i, a in enumerate(mine) for b in mine[i + 1:]]
        if pairs:
          data["points"] += rep.f4_points(pairs, batches_for(model), **kw)["points"]
      return rep.figure_f4(data, os.path.join(adir, "f4")) if data["points"] else None
    out["F4"] = _cached(os.path.join(adir, "f4.json"), cfg.force, f4)
  if "F5" in exps:
    def f5():
      entries = []
      for model in figure_models(cfg):
        for init in ("random", "pretrained"):
          mine = _runs_of(finished, model, init)
          if mine:
            entries += rep.f5_filters([run_dir(cfg, mine[0])])
      return rep.figure_f5(entries, os.path.join(adir, "f5")) if entries else None
    out["F5"] = _cached(os.path.join(adir, "f5.json"), cfg.force, f5)
  keras.backend.clear_session()
  return out


def run_study(cfg, stage="all"):
  """Runs the study: stage "all" (sweep, analyses, report), "train" (sweep only, e.g. one shard), "report"
  (analyses and report over whatever runs are finished) or "plan" (list the runs). Returns the report path or
  None."""
  from transfusion_tf.experiments import report
  t0 = time.time()
  runs = plan_runs(cfg)
  if stage == "plan":
    sources = source_plan(cfg, runs)
    print(f"study plan: {len(runs)} training runs, sources {sources}", flush=True)
    for r in runs:
      print(f"  {r.name}{'  (done)' if is_done(run_dir(cfg, r)) else ''}", flush=True)
    return None
  if stage in ("all", "train"):
    run_sweep(cfg, runs)
  if stage == "train" or cfg.shard[1] > 1:
    return None
  missing = [r.name for r in runs if not is_done(run_dir(cfg, r))]
  if missing:
    print(f"warning: {len(missing)} runs unfinished, left out of the report: {', '.join(missing[:5])}"
          + (" ..." if len(missing) > 5 else ""), flush=True)
  print("== analyses", flush=True)
  analyses = run_analyses(cfg, runs)
  print("== report", flush=True)
  path = report.write_report(cfg, runs, analyses, wall_seconds=time.time() - t0)
  print(f"report written to {path}", flush=True)
  return path
