"""The study's plan: its configuration, the training runs the selected experiments need, and where everything lives.

Layout of the output folder OUT:
  OUT/plan.json                           the runs, with their keys and directories
  OUT/pretrain/<model>/                   source pretraining (when no real pretrained weights are given)
  OUT/runs/<model>/<init>/seed<k>[_n<N>]  one training run each (see training/rundir.py)
  OUT/tb/<run name>/                      TensorBoard: `tensorboard --logdir OUT/tb` shows every run
  OUT/analysis/<figure>.png|json          F2-F5 and the curve figures
  OUT/report.md                           the report (experiments/report.py)
"""
import collections
import dataclasses
import functools
import os

import keras

from transfusion_tf import models
from transfusion_tf.errors import UsageError
from transfusion_tf.experiments import registry
from transfusion_tf.models import init as init_lib
from transfusion_tf.models import weights as weights_lib
from transfusion_tf.training import policy, rundir, trainer

F4_MODELS = ("resnet50", "cbr_small")
SOURCES = ("auto", "synthetic", "imagenet")
PRETRAINED_FILE = "pretrained.weights.h5"  # In OUT/pretrain/<model>/.


@dataclasses.dataclass
class StudyConfig:
  """What a study flagfile names. `base` is the TrainConfig every run starts from (training, data, model flags);
  `source_weights` is "auto" (ImageNet from the Keras cache where present, else synthetic-source pretraining),
  "synthetic" (always pretrain), "imagenet", or a weights path.

  Statistics: `equivalence_margin` (AUC, 0.01 = 1 point) bounds a "no difference" claim; `similarity_margin` the
  same for F2's small-model claim (SVCCA units); `converge_k` evaluations in a row at or above the threshold define
  steps-to-threshold; `curve_area_steps` is the step up to which the area under the validation curve is taken
  (None: the training budget)."""
  out: str
  base: trainer.TrainConfig
  models: tuple = ("cbr_tiny",)
  inits: tuple = ("random", "pretrained")
  seeds: int = 1
  experiments: tuple = ("T1",)
  source_weights: str = "auto"
  pretrain_steps: int = policy.pretrain_defaults()["train_steps"]
  pretrain_image_size: int = None  # None: policy.pretrain_image_size(model).
  pretrain_num_train: int = policy.pretrain_data_sizes()["num_train"]
  pretrain_learning_rate: float = None  # None: policy.pretrain_learning_rate (per model).
  pretrain_weight_decay: float = policy.pretrain_defaults()["weight_decay"]
  small_data_subset: int = 5000
  wt_stages: tuple = None
  analysis_images: int = 256
  analysis_max_positions: int = 2000
  analysis_min_datapoints: float = 10.0
  equivalence_margin: float = 0.01
  similarity_margin: float = 0.05
  converge_k: int = 2
  curve_area_steps: int = None
  force: bool = False
  overwrite: bool = False  # Retrain the runs recorded with other settings than these (see run_differences).
  shard: tuple = (0, 1)
  parallel_runs: str = "1"  # "auto" or N: concurrent training runs (experiments/parallel.py).
  width_multipliers: dict = dataclasses.field(default_factory=dict)
  init_seeds: dict = dataclasses.field(default_factory=dict)  # init label -> seeds, overriding `seeds` for it.
  learning_rates: dict = dataclasses.field(default_factory=dict)  # model -> peak learning rate, overriding the base's.

  def seeds_for(self, init):
    """The number of seeds (0..n-1) of init label `init`: its --study_init_seeds entry, else --study_seeds."""
    return self.init_seeds.get(init, self.seeds)

  def describe_seeds(self):
    """"3 seed(s)", or "5 seeds (meanvar 3)" when some init labels override --study_seeds."""
    if not self.init_seeds:
      return f"{self.seeds} seed(s)"
    return f"{self.seeds} seed(s) ({', '.join(f'{k} {v}' for k, v in sorted(self.init_seeds.items()))})"

  def describe_learning_rates(self):
    """The peak learning rate as the report states it, e.g. "0.002 (adam, cosine)", or with the studied models
    --study_learning_rates sets, "0.002 (resnet50 0.004; adam, cosine)"."""
    rates = {m: r for m, r in sorted(self.learning_rates.items()) if m in self.models}
    per = "".join(f"{m} {r:g}; " for m, r in rates.items())
    return f"{self.base.learning_rate:g} ({per}{self.base.optimizer}, {self.base.lr_schedule})"

  def __post_init__(self):
    # A preset (--experiments=ANSWER) stands for its experiments everywhere a study reads its selection.
    self.experiments = registry.expand(self.experiments)

  def model_kwargs(self, model):
    """build_model kwargs for `model`: the base flags with this model's width multiplier, if the study sets one.
    --zero_init_residual reaches ResNet50 runs only (it names ResNet50's residual blocks), so one flagfile can set it
    for a study that also trains CBR models."""
    kw = {k: v for k, v in self.base.model_kwargs.items() if k != "slim"}
    if model != "resnet50":
      kw.pop("zero_init_residual", None)
    if model in self.width_multipliers:
      kw["width_multiplier"] = self.width_multipliers[model]
    return kw

  @property
  def area_steps(self):
    """The step up to which curve areas are taken."""
    return self.curve_area_steps or self.base.train_steps


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
    return scheme_of(self.init)

  def needs_source(self):
    return init_lib.parse_scheme(self.scheme()[0])[0] in init_lib.NEEDS_SOURCE


def scheme_of(label):
  """(init scheme, gabor frequency) of a study init label; gabor_low / gabor_high carry the frequency."""
  if label.startswith("gabor"):
    return "gabor", (label.split("_", 1)[1] if "_" in label else "low")
  return label, "low"


def check_init_label(label, flag="--study_inits"):
  """Raises UsageError unless `label` names an init scheme (the study's labels: the schemes, gabor_low, gabor_high);
  the message names `flag`."""
  scheme, freq = scheme_of(label)
  if scheme == "gabor" and freq not in ("low", "high"):
    raise UsageError(f"{flag} has {label!r}: the Gabor labels are gabor_low and gabor_high")
  try:
    init_lib.parse_scheme(scheme)
  except UsageError as e:
    raise UsageError(f"{flag} has an unknown init {label!r}: {e}") from None


def figure_models(cfg):
  """Models for F4/F5: ResNet50 and CBR-Small as in the paper; without CBR-Small, the study's first CBR."""
  chosen = [m for m in F4_MODELS if m in cfg.models]
  if "cbr_small" not in chosen:
    chosen += [m for m in cfg.models if m.startswith("cbr_")][:1]
  return chosen or list(cfg.models)[:1]


@functools.lru_cache(maxsize=None)
def model_stages(model_name):
  """The named stages of `model_name` bottom-up, without `pool` (one home for the stage order the report uses)."""
  model = models.build_model(model_name, 2, (max(models.MIN_SIZE[model_name], 32),) * 2 + (3,),
                             initialize_weights=False)
  body = tuple(s for s in models.stage_names(model) if s != "pool")
  keras.backend.clear_session()
  return body


def default_wt_stages(model_name):
  """The WT sweep's stages: none, then every stage bottom-up but the pool, then all (full transfer)."""
  return ("none",) + model_stages(model_name)


def wt_stages(cfg, model_name):
  """The WT stages of `model_name`: none, then the --wt_stages that exist in this architecture, bottom-up whatever
  order they were given in; the default list without --wt_stages. none (random init) is always there: WT's reading
  contrasts the lowest transfused stage with random and full transfer, and reads the stages from the bottom."""
  known = default_wt_stages(model_name)
  if not cfg.wt_stages:
    return known
  return ("none",) + tuple(s for s in known[1:] if s in cfg.wt_stages)


def wt_label(stage):
  """The init label of WT's transfusion up to `stage` (none = random, all = full transfer)."""
  return "random" if stage == "none" else "pretrained" if stage == "all" else f"transfuse:{stage}"


def validate_config(cfg, experiments):
  """Raises UsageError for study mistakes visible before anything is written: seeds, models, init labels,
  experiment ids, image sizes, margins."""
  if cfg.seeds < 1:
    raise UsageError(f"--study_seeds={cfg.seeds}: need at least 1 seed (the paper: 3)")
  for label, n in cfg.init_seeds.items():
    if n < 1:
      raise UsageError(f"--study_init_seeds={label}={n}: need at least 1 seed")
  if not cfg.models:
    raise UsageError("--study_models is empty")
  # A known model outside --study_models is allowed, so a flagfile's entry survives a narrower --study_models.
  for flag, per_model in (("--study_learning_rates", cfg.learning_rates),
                          ("--study_width_multipliers", cfg.width_multipliers)):
    for m in per_model:
      if m not in models.MODEL_NAMES:
        raise UsageError(f"{flag} names an unknown model {m!r}; known: {', '.join(models.MODEL_NAMES)}")
  for m in cfg.models:
    if m not in models.MODEL_NAMES:
      raise UsageError(f"--study_models has an unknown model {m!r}; known: {', '.join(models.MODEL_NAMES)}")
    if cfg.base.image_size < models.MIN_SIZE[m]:
      raise UsageError(f"--image_size={cfg.base.image_size} is below {m}'s minimum of {models.MIN_SIZE[m]} px")
  for label in cfg.inits:
    check_init_label(label)
  known = {e.id for e in experiments}
  unknown = [e for e in cfg.experiments if e not in known]
  if unknown:
    raise UsageError(f"--experiments has unknown ids {unknown}; known: {', '.join(sorted(known))}, or a preset: "
                     f"{', '.join(registry.PRESETS)}")
  if not cfg.experiments:
    raise UsageError("--experiments is empty")
  for name in ("equivalence_margin", "similarity_margin"):
    if not 0 < getattr(cfg, name) < 1:
      raise UsageError(f"--{name}={getattr(cfg, name)} must lie in (0, 1)")
  if cfg.converge_k < 1:
    raise UsageError(f"--converge_k={cfg.converge_k} must be at least 1")
  if cfg.curve_area_steps is not None and not 0 < cfg.curve_area_steps <= cfg.base.train_steps:
    raise UsageError(f"--curve_area_steps={cfg.curve_area_steps} must lie in (0, --train_steps]")
  if cfg.analysis_images < 1:
    raise UsageError(f"--analysis_images={cfg.analysis_images} must be positive")
  if cfg.wt_stages and "WT" in cfg.experiments:
    # A stage may exist in one model only (ResNet50's block1, InceptionV3's stem); one in none is a typo.
    unknown = [s for s in cfg.wt_stages if s not in ("none", "all")
               and not any(s in default_wt_stages(m) for m in cfg.models)]
    if unknown:
      stages = "; ".join(f"{m}: {', '.join(model_stages(m))}" for m in cfg.models)
      raise UsageError(f"--wt_stages names {', '.join(unknown)}, a stage of none of --study_models ({stages})")


def plan_runs(cfg, experiments):
  """The ordered, de-duplicated Runs that `cfg`'s selected experiments need. experiments: the registered
  experiments (registry.Experiment); each contributes runs(cfg) -> [(model, init, subset)], seeds added here."""
  validate_config(cfg, experiments)
  chosen = set(cfg.experiments)
  wanted = [(m, init, None) for m in cfg.models for init in cfg.inits]
  for exp in experiments:
    if exp.id in chosen:  # Not exp.selected: a table shown beside other experiments adds no runs of its own.
      wanted += list(exp.runs(cfg))
  runs = []
  for model, init, subset in wanted:
    for s in range(cfg.seeds_for(init)):
      runs.append(Run(model, init, s, subset))
  return list(dict.fromkeys(runs))


def arm_seed_counts(runs):
  """The number of runs (seeds) in each arm of `runs`, an arm being one (model, init label, subset): [int] per arm,
  in first-seen order."""
  return list(collections.Counter((r.model, r.init, r.subset) for r in runs).values())


def run_dir(cfg, run):
  return os.path.join(cfg.out, "runs", run.name)


def result_problem(path):
  """One line naming the run folder `path`'s result.json when it exists but cannot make the run finished (not valid
  JSON, empty, or without a selected checkpoint); None when it is sound or absent (rundir.read_result)."""
  return rundir.read_result(path)[1]


def is_done(path):
  """Whether the run in `path` is finished: its result.json exists and is sound (a damaged one makes it
  unfinished; result_problem names it)."""
  return os.path.exists(os.path.join(path, "result.json")) and result_problem(path) is None


def done_as_planned(cfg, run, sources):
  """Whether `run` is finished with the settings the study plans for it (not merely finished: see run_differences)."""
  return is_done(run_dir(cfg, run)) and not run_differences(cfg, run, sources)


def run_differences(cfg, run, sources):
  """The settings (TrainConfig keys, sorted) in which the run recorded in `run`'s folder (config.json, and
  result.json once finished) differs from what the study plans for it; [] when the folder holds no run or the
  planned one. sources: source_plan's."""
  path = run_dir(cfg, run)
  # A damaged file records nothing here: a damaged result.json makes the run unfinished (result_problem), and the
  # trainer names a damaged config.json when it reaches it.
  return sorted({k for recorded in trainer.recorded_configs(path, skip_damaged=True)
                 for k in recorded_differences(cfg, run, sources, recorded, finished=is_done(path))})


def recorded_differences(cfg, run, sources, recorded, finished=True):
  """The settings in which `recorded` (a TrainConfig dict of `run`'s: config.json "train", result.json "flags")
  differs from the study's plan for `run`, by the comparison transfusion-train makes (trainer.config_differences).

  For a `finished` run, the study's own pretrained source counts as the same file after the study folder was moved
  or copied: the run records its old path, and the source's settings are checked against the plan on their own
  (study.check_inputs). An unfinished one keeps the trainer's comparison, which decides whether it can resume."""
  planned = run_config(cfg, run, planned_weights(cfg, run, sources))
  old = recorded.get("weights")
  if (finished and planned.weights == pretrained_path(cfg, run.model) and isinstance(old, str)
      and os.path.normpath(old).split(os.sep)[-3:] == ["pretrain", run.model, PRETRAINED_FILE]):
    planned = dataclasses.replace(planned, weights=old)
  return trainer.train_config_differences(recorded, planned)


def run_config(cfg, run, weights):
  """The TrainConfig of `run`: the study's base with this run's model, init, seed, source, data subset and the
  model's learning rate where --study_learning_rates sets one."""
  scheme, freq = run.scheme()
  model_kwargs = cfg.model_kwargs(run.model)
  model_kwargs["slim"] = scheme == "slim"
  data_kwargs = dict(cfg.base.data_kwargs)
  if run.subset:
    data_kwargs["train_subset"] = run.subset
  return dataclasses.replace(cfg.base, model=run.model, init=scheme, seed=run.seed, gabor_frequency=freq,
                             weights=weights if run.needs_source() else None, model_kwargs=model_kwargs,
                             data_kwargs=data_kwargs,
                             learning_rate=cfg.learning_rates.get(run.model, cfg.base.learning_rate))


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
      if not os.path.isfile(os.path.expanduser(sw)):
        raise UsageError(f"--source_weights file not found: {sw}")
      out[model] = sw
  return out


def pretrain_dir(cfg, model):
  return os.path.join(cfg.out, "pretrain", model)


def pretrained_path(cfg, model):
  return os.path.join(pretrain_dir(cfg, model), PRETRAINED_FILE)


def planned_weights(cfg, run, sources):
  """The source weights `run` trains from under `sources` (source_plan's): the study's pretrained file, "imagenet"
  or a path; None for a run that needs no source."""
  if not run.needs_source():
    return None
  source = sources[run.model]
  return pretrained_path(cfg, run.model) if source == "pretrain" else source


def pretrain_config(cfg, model):
  """TrainConfig for synthetic-source pretraining of `model` (same widths as the study's models, full width for
  Slim, whose lower blocks are copied from a full ResNet50)."""
  base = cfg.base
  data_kwargs = policy.pretrain_data_sizes(cfg.pretrain_num_train)
  if base.data_kwargs.get("cache_dir"):
    data_kwargs["cache_dir"] = base.data_kwargs["cache_dir"]
  defaults = policy.pretrain_defaults()
  return dataclasses.replace(
      base, model=model, dataset="synthetic_source", init="random", weights=None, seed=0,
      image_size=policy.pretrain_image_size(model, cfg.pretrain_image_size), train_steps=cfg.pretrain_steps,
      eval_every=policy.pretrain_eval_every(cfg.pretrain_steps), learning_rate=policy.pretrain_learning_rate(model, cfg.pretrain_learning_rate),
      weight_decay=cfg.pretrain_weight_decay, convergence_auc=None, optimizer=defaults["optimizer"],
      lr_schedule=defaults["lr_schedule"],
      model_kwargs=dict(cfg.model_kwargs(model), **policy.pretrain_model_kwargs(model)), data_kwargs=data_kwargs)


def shard_runs(cfg, runs):
  """The runs of this process's shard: every n-th run from the i-th, for cfg.shard = (i, n)."""
  i, n = cfg.shard
  return [r for k, r in enumerate(runs) if k % n == i]


def plan_record(cfg, runs, sources):
  """What plan.json holds: every run with its key and directory, and the source plan."""
  return {"runs": [dict(dataclasses.asdict(r), name=r.name, dir=run_dir(cfg, r)) for r in runs], "sources": sources}


def read_plan(out):
  """OUT/plan.json, or a UsageError when `out` holds no study (e.g. a mistyped --out with --study_stage=report) or a
  damaged plan.json (naming it)."""
  path = os.path.join(out, "plan.json")
  again = ("; the training stage writes it again: re-run the study with --study_stage=all or train (finished runs "
           "are not retrained)")
  try:
    plan = rundir.read_json(path)
  except ValueError as e:
    raise UsageError(f"{e}{again}") from None
  if plan is None:
    raise UsageError(f"--out={out} holds no study (no plan.json); run the study there first, or check the path")
  if not isinstance(plan, dict) or not isinstance(plan.get("runs"), list):
    raise UsageError(f"{path} is damaged: it holds no list of runs{again}")
  return plan
