"""The study runner: one flagfile in, every pretraining run, training run, analysis and the report out.

It is a loop over the experiment registry (experiments/registry.py, catalog.py): the plan is the union of the
selected experiments' runs; the analyses are theirs, each cached with the exact runs it used (name, final step and
a fingerprint of result.json) and recomputed whenever that set or the analysis settings change, its cache is
damaged or its figure is gone (the cache holds paths relative to the study, so a moved study keeps it); the report
is their sections and readings in order.

Resumable at every level: a finished run (a sound result.json; a damaged one is set aside) is skipped, an
unfinished one resumes from its checkpoint, a finished analysis is reused while its inputs are unchanged; `force`
redoes everything. A run counts as the
study's only while its recorded configuration is the one the study plans (plan.run_differences): one recorded with
other settings stops the study before it trains anything, and `overwrite` retrains it; the report checks every run
it reads again, so a run retrained by another command in the meantime never enters it. `shard=(i, n)` trains every
n-th run only, so a sweep spreads over processes or machines; the analyses and the report then run once, without
a shard. Every input the study reads is checked before anything is written or trained.
"""
import dataclasses
import hashlib
import json
import math
import os
import time

import keras

from transfusion_tf import files, models
from transfusion_tf.analysis import compare
from transfusion_tf.errors import UsageError
from transfusion_tf.experiments import catalog, common, parallel, plan, power, progress, report, stats
from transfusion_tf.training import locks, rundir, trainer

ANALYSIS_VERSION = 3  # Bump when an analysis computes something else from the same runs.


# -- checks before anything is written ----------------------------------------------------------------------------


def check_out(out):
  """Raises UsageError unless `out` is (or can become) a writable folder."""
  if os.path.exists(out) and not os.path.isdir(out):
    raise UsageError(f"--out={out} is an existing file, not a folder")
  if os.path.isdir(out) and not os.path.isfile(os.path.join(out, "plan.json")):
    for name in ("config.json", "result.json"):
      if os.path.isfile(os.path.join(out, name)):
        raise UsageError(f"--out={out} is a run folder (it holds {name}), not a study folder; pass a new folder")
  parent = out
  while not os.path.exists(parent):
    parent = os.path.dirname(os.path.abspath(parent))
  if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
    raise UsageError(f"--out={out}: {parent} is not a writable folder")


def check_inputs(cfg, runs, sources):
  """Validates every run's configuration and the data every run reads, before anything is written."""
  for r in runs:
    rc = plan.run_config(cfg, r, "imagenet" if r.needs_source() else None)
    trainer.validate(dataclasses.replace(rc, weights=rc.weights and "imagenet"))
  for m, s in sources.items():
    if s == "pretrain":
      pcfg = plan.pretrain_config(cfg, m)
      trainer.validate(pcfg)
      # A finished source is reused without being retrained; one pretrained with other settings (another
      # --pretrain_steps, an older recipe) would silently stand behind every run that transfers from it.
      diff = [] if cfg.force else trainer.config_differences(plan.pretrain_dir(cfg, m), pcfg)
      if diff:
        raise UsageError(f"--out={cfg.out} holds {m}'s synthetic source pretrained with other settings "
                         f"({', '.join(diff)} differ); pass --force to redo the study, or choose another --out")
  from transfusion_tf.data import pipeline  # pylint: disable=import-outside-toplevel
  # Building the data reads and checks the folders, CSVs and images (and generates the synthetic cache once).
  data = pipeline.build_data(cfg.base.dataset, image_size=cfg.base.image_size, batch_size=cfg.base.batch_size,
                             model_name=cfg.models[0], seed=0, channels=3, **cfg.base.data_kwargs)
  pipeline.check_classes(data)  # A split of one class has no AUC: refuse before training anything.


def stale_line(cfg, stale, report=False):
  """One line for runs recorded with other settings than the plan's. stale: {Run: [differing keys]}, plan order."""
  (run, keys), more = next(iter(stale.items())), len(stale) - 1
  what = (f"--out={cfg.out}: {run.name} was trained with other settings than this study's ({', '.join(keys)} "
          "differ)" + (f", and {more} more run{'s' if more > 1 else ''}" if more else ""))
  them = "them" if more else "it"
  if report:
    return what + f", so no report is written: re-run the study with --overwrite to retrain {them}"
  return what + f"; pass --overwrite to retrain {them} with these settings, or choose another --out"


def check_runs(cfg, runs, sources):
  """Returns {run: differing keys} for the `runs` whose folders record other settings than the plan's (the ones an
  --overwrite retrains). Without cfg.overwrite (or force) any such run is a UsageError naming it; with it and none,
  --overwrite would do nothing and is refused (except in a --parallel_runs child: its parent may have replaced
  them already)."""
  stale = {r: diff for r in runs if (diff := plan.run_differences(cfg, r, sources))}
  if cfg.force:
    return stale
  if stale and not cfg.overwrite:
    raise UsageError(stale_line(cfg, stale))
  if cfg.overwrite and not stale and not os.environ.get(parallel.CHILD_ENV):
    raise UsageError(f"--overwrite: no run in --out={cfg.out} was trained with other settings than this study's, so "
                     "it would retrain nothing; drop it (--force redoes every run)")
  return stale


def check_loaded(ctx, sources):
  """Raises UsageError naming the first run the report read whose result.json records other settings than the
  plan's (retrained by another command, e.g. transfusion-train --overwrite, since the sweep). A result without
  "flags" (made by hand, not by the trainer) records no settings to compare."""
  recorded = {r: res.result.get("flags") for r, res in ctx.results.items()}
  stale = {r: diff for r in ctx.runs if isinstance(recorded.get(r), dict)
           and (diff := plan.recorded_differences(ctx.cfg, r, sources, recorded[r]))}
  if stale:
    raise UsageError(stale_line(ctx.cfg, stale, report=True))


def check_unchanged(ctx):
  """Raises UsageError when a run the report read no longer holds the result.json it read (another command moved
  it aside or retrained it meanwhile): the report would mix that run's old numbers with its new files."""
  for r, res in ctx.results.items():
    try:
      now = rundir.read_json(os.path.join(res.dir, "result.json"))
    except ValueError:
      now = None  # Damaged since it was read: changed all the same.
    # As JSON text: a NaN metric never equals itself as a float.
    if json.dumps(now, sort_keys=True) != json.dumps(res.result, sort_keys=True):
      raise UsageError(f"--out={ctx.cfg.out}: {r.name} changed while this report was being made (retrained by "
                       "another command?); no report written: re-run once that command is done")


# -- the sweep -----------------------------------------------------------------------------------------------------


def estimate_step_seconds(cfg, model):
  """(seconds per training step, seconds to trace it, seconds per forward-only batch) of `model` at the study's
  size and batch, measured on a few bare steps (this process's threads)."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
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

  @tf.function
  def forward():
    return m(x, training=False)

  forward()
  t = time.time()
  for _ in range(3):
    forward()
  fwd = (time.time() - t) / 3
  keras.backend.clear_session()
  return sec, trace, fwd


def _fmt_seconds(s):
  return time.strftime("%H:%M:%S", time.gmtime(max(0, s)))


def print_plan(cfg, runs, sources, shard_runs, procs=1):
  """Prints N runs, which are done, and an estimated time from measured steps (shared by `procs` concurrent
  processes); returns the estimate in s."""
  done = [r for r in runs if plan.done_as_planned(cfg, r, sources)]
  stale = [r for r in shard_runs if cfg.overwrite and plan.run_differences(cfg, r, sources)]
  to_pretrain = [m for m, s in sources.items() if s == "pretrain" and not os.path.exists(plan.pretrained_path(cfg, m))]
  print(f"study plan: {len(runs)} training runs ({len(done)} done"
        + (f", {len(stale)} with other settings to retrain (--overwrite)" if stale else "")
        + f"), {len(to_pretrain)} source pretraining runs to do; shard {cfg.shard[0]}/{cfg.shard[1]} holds "
        f"{len(shard_runs)} runs", flush=True)
  for m, s in sources.items():
    what = ("pretraining on the embedded synthetic source task, standing in for ImageNet (no ImageNet weights "
            "here)") if s == "pretrain" else ("ImageNet weights from the Keras cache" if s == "imagenet" else s)
    print(f"  source weights for {m}: {what}", flush=True)
  todo = [r for r in shard_runs if not plan.done_as_planned(cfg, r, sources)]
  per_model = {m: estimate_step_seconds(cfg, m) for m in sorted({r.model for r in todo} | set(to_pretrain))}
  evals = cfg.base.train_steps // cfg.base.eval_every + 1
  # Scoring the validation split at every evaluation and the test split at the end can cost as much as training
  # (InceptionV3 at 75 px with 2,000 validation and 5,000 test images: the estimate was half the measured time when
  # it counted 4 steps per evaluation), so they are counted in forward-only batches where the split sizes are set.
  sizes = cfg.base.data_kwargs
  val_batches, test_batches = (math.ceil(sizes[k] / cfg.base.batch_size) if sizes.get(k) else None
                               for k in ("num_val", "num_test"))
  estimate = 0.0
  # Each run also builds its model and traces its train and eval steps: about three first-step times.
  for r in todo:
    sec, trace, fwd = per_model[r.model]
    scoring = evals * (val_batches * fwd if val_batches else 4 * sec) + (test_batches or 0) * fwd
    estimate += sec * cfg.base.train_steps + scoring + 3 * trace
  for m in to_pretrain:
    sec, trace, _ = per_model[m]
    # Step time scales about with the pixel count; pretraining usually runs at another size.
    scale = (plan.pretrain_config(cfg, m).image_size / cfg.base.image_size) ** 2
    estimate += sec * scale * cfg.pretrain_steps + 3 * trace
  if per_model:
    steps = ", ".join(f"{m} {s * 1000:.0f} ms/step" for m, (s, _, _) in per_model.items())
    estimate /= procs
    print(f"  measured: {steps}; estimated training time for this shard {_fmt_seconds(estimate)}"
          + (f" over {procs} processes" if procs > 1 else "") + " (analyses come "
          "after)", flush=True)
  return estimate


def ensure_sources(cfg, sources, wait=True):
  """Runs (or resumes) synthetic-source pretraining where needed. A source another live process is pretraining
  into the same folder is skipped first and, with `wait`, waited for after the others (pretrained here if that
  process dies without finishing it). Returns {model: weights for the runs} (without `wait`, a source another
  process holds may not exist yet)."""
  out = {m: s for m, s in sources.items() if s != "pretrain"}
  pending = [m for m, s in sources.items() if s == "pretrain"]
  redo = set(pending) if cfg.force else set()
  while pending:
    held = []
    for model in pending:
      path, folder = plan.pretrained_path(cfg, model), plan.pretrain_dir(cfg, model)
      if os.path.exists(path) and model not in redo:
        continue
      line = f"== pretraining {model} on synthetic_source (standing in for ImageNet)"
      done = trainer.pretrain(plan.pretrain_config(cfg, model), folder, path, overwrite=model in redo,
                              tb_dir=os.path.join(cfg.out, "tb", "pretrain", model),
                              log_prefix=f"[pretrain/{model}] ", on_start=lambda h=line: print(h, flush=True))
      keras.backend.clear_session()
      if done is None:
        held.append(model)
      else:
        redo.discard(model)
    if not wait:
      break
    for model in held:
      path, folder = plan.pretrained_path(cfg, model), plan.pretrain_dir(cfg, model)
      print(f"  waiting for {model}'s source from {locks.describe(locks.holder(folder))}", flush=True)
      locks.wait_for(lambda: os.path.exists(path), folder)  # pylint: disable=cell-var-from-loop
    pending = [m for m in held if not os.path.exists(plan.pretrained_path(cfg, m))]
  out.update({m: plan.pretrained_path(cfg, m) for m, s in sources.items() if s == "pretrain"})
  return out


def set_aside_damaged_result(run, path):
  """Renames a damaged result.json of `run` (plan.result_problem) to result.json.damaged, saying so in one line: the
  run is then unfinished, and training it resumes from its last checkpoint, which for a finished run only scores the
  selected checkpoint again and writes result.json anew (the trainer would do the same, but overwrite the damaged
  file, which is kept here for a person to look at)."""
  problem = plan.result_problem(path)
  if problem is None:
    return
  src = os.path.join(path, "result.json")
  try:
    os.replace(src, src + ".damaged")
  except FileNotFoundError:
    return  # Another process of this study set it aside first and says so.
  print(f"  {problem}: {run.name} counts as unfinished and resumes from its last checkpoint (the file is kept as "
        "result.json.damaged)", flush=True)


def run_sweep(cfg, runs, sources, procs=1, started=None):
  """Pretrains and trains every run of this shard of `runs` (resuming). A run another live process holds is
  skipped, and waited for at the end (trained here if its holder dies without finishing it), so two processes on one
  --out train each run once and both end with every run finished. A run found recorded with other settings than
  the plan's (another study on this --out, say) is a UsageError naming it, or, with cfg.overwrite, retrained.
  started: the study's start time, from which the progress line counts (default: now)."""
  shard_runs = plan.shard_runs(cfg, runs)
  files.atomic_write_json(os.path.join(cfg.out, "plan.json"), plan.plan_record(cfg, runs, sources))
  # A --parallel_runs child leaves the plan and the estimate to its parent.
  estimate = 0.0 if os.environ.get(parallel.CHILD_ENV) else print_plan(cfg, runs, sources, shard_runs, procs)
  t0 = time.time()
  needed = {m: s for m, s in sources.items() if any(r.model == m and r.needs_source() for r in shard_runs)}
  reporter = None
  if not os.environ.get(parallel.CHILD_ENV):  # One study-level line, from the process that leads the sweep.
    items = progress.sweep_items(cfg, shard_runs, [m for m, s in needed.items() if s == "pretrain"])
    reporter = progress.Reporter(items, procs, cfg.base.log_every_seconds, t0=started).start()
  try:
    _train_shard(cfg, sources, shard_runs, needed, estimate, t0)
  except BaseException:
    if reporter is not None:
      reporter.stop(final=False)
    raise
  if reporter is not None:
    reporter.stop()


def _train_shard(cfg, sources, shard_runs, needed, estimate, t0):
  """run_sweep's loop: pretrains the `needed` sources and trains `shard_runs`, waiting for those others hold."""
  # Sources another process is pretraining are not waited for here: their runs come after the others.
  weights = ensure_sources(cfg, needed, wait=False)
  redo = set(shard_runs) if cfg.force else set()
  pending = list(shard_runs)
  while pending:
    held = []
    for r in pending:
      path = plan.run_dir(cfg, r)
      set_aside_damaged_result(r, path)
      if r not in redo:
        diff = plan.run_differences(cfg, r, sources)
        if diff and not cfg.overwrite:  # Written since the check before the sweep, by another command.
          raise UsageError(stale_line(cfg, {r: diff}))
        if plan.is_done(path) and not diff:
          continue
      if r.needs_source() and needed.get(r.model) == "pretrain" and not os.path.exists(weights[r.model]):
        held.append(r)
        continue
      k = shard_runs.index(r) + 1
      header = (f"== run {k}/{len(shard_runs)}: {r.name}  (elapsed {_fmt_seconds(time.time() - t0)}"
                + (f", estimate {_fmt_seconds(estimate)})" if estimate else ")"))
      try:
        # --overwrite replaces only a run of other settings: one another process has meanwhile finished with these
        # settings is kept. The header comes once this process holds the run: a run another process (a
        # --parallel_runs child, say) trains gets no header and no "held" line here.
        result = trainer.train(plan.run_config(cfg, r, weights.get(r.model)), path,
                               overwrite=True if r in redo else "different" if cfg.overwrite else False,
                               tb_dir=os.path.join(cfg.out, "tb", r.name.replace("/", "_")),
                               log_prefix=f"[{r.name}] ",
                               on_start=lambda h=header: print(h, flush=True))
      except UsageError:
        diff = plan.run_differences(cfg, r, sources)
        if diff:  # Another command started it with other settings after the check above: the study's line.
          raise UsageError(stale_line(cfg, {r: diff})) from None
        raise
      keras.backend.clear_session()
      if result is None:
        held.append(r)
      else:
        redo.discard(r)
    waiting = {r.model for r in held if r.needs_source() and not os.path.exists(weights.get(r.model) or "")}
    ensure_sources(cfg, {m: needed[m] for m in waiting})  # Waits for them, or pretrains them if their holder died.
    for r in held:  # Held by another live process: wait for it; if it dies first, the next pass trains it.
      path = plan.run_dir(cfg, r)
      locks.wait_for(lambda: plan.is_done(path), path)  # pylint: disable=cell-var-from-loop
    # A run its holder finished with other settings goes round again: refused there, or retrained (--overwrite).
    pending = [r for r in held if not plan.done_as_planned(cfg, r, sources)]


# -- analyses ------------------------------------------------------------------------------------------------------


def analysis_image_count(cfg, model, stages=None):
  """Images the SVCCA analyses of `model` read: --analysis_images, or more where one of `stages` (default: all the
  model's stages) needs them to reach --analysis_min_datapoints per neuron with every spatial position of every
  image (ResNet50's block3 at 48 px has 3 x 3 positions and, at quarter width, 256 channels: 285 images for 10 per
  neuron). A stage that the validation split cannot bring to the minimum (ResNet50's block4 there: 1,280 images
  for 2 x 2 positions and 512 channels, against the demo's 1,000) does not raise the count: it would stay below the
  minimum whatever was read, is marked by the analyses and left out of the readings, and reading the whole split
  for it took a minute of the demo. The split's size is known for the synthetic tasks (num_val); elsewhere the
  split caps what is read."""
  size = cfg.base.image_size
  available = cfg.base.data_kwargs.get("num_val")
  m = models.build_model(model, 2, (size, size, 3), initialize_weights=False, **cfg.model_kwargs(model))
  need = cfg.analysis_images
  for stage in stages or plan.model_stages(model):
    shape = models.stage_output(m, stage).shape
    positions = int(shape[1]) * int(shape[2]) if len(shape) == 4 else 1
    stage_need = math.ceil(cfg.analysis_min_datapoints * int(shape[-1]) / positions)
    if available is None or stage_need <= int(available):
      need = max(need, stage_need)
  keras.backend.clear_session()
  return need


def analysis_batches(cfg, model):
  """The first `analysis_image_count` validation images, preprocessed for `model`, in batches of 32 (the same
  images, in the same order, for every model): a `compare.ImageBatches`, which reads them from the input pipeline
  on every pass instead of holding them (2,000 images at 587 px would be 8 GB)."""
  base = cfg.base
  config = {"dataset": base.dataset, "image_size": base.image_size, "model": model, "seed": 0, "channels": 3,
            "data_kwargs": base.data_kwargs}
  return compare.ImageBatches(config, analysis_image_count(cfg, model), 32)


def _fingerprint(path):
  with open(path, "rb") as f:
    return hashlib.sha1(f.read()).hexdigest()[:16]


def analysis_manifest(ctx, used):
  """What an analysis depends on: each run's name, final step and result.json fingerprint, and the settings."""
  cfg = ctx.cfg
  return {"version": ANALYSIS_VERSION,
          "runs": [{"name": r.name, "step": ctx.results[r].result["final"]["step"],
                    "result": _fingerprint(os.path.join(ctx.results[r].dir, "result.json"))} for r in used],
          "settings": {"dataset": cfg.base.dataset, "image_size": cfg.base.image_size,
                       "analysis_images": cfg.analysis_images, "max_positions": cfg.analysis_max_positions,
                       "min_datapoints_per_neuron": cfg.analysis_min_datapoints}}


PATH_KEYS = ("png", "json", "run", "run_a", "run_b", "init_from")  # Analysis data keys that hold files of the study.


def _relocate(obj, fn):
  """`obj` (analysis data) with fn applied to every string under a PATH_KEYS key, at any depth."""
  if isinstance(obj, dict):
    return {k: fn(v) if k in PATH_KEYS and isinstance(v, str) else _relocate(v, fn) for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_relocate(v, fn) for v in obj]
  return obj


def _checksum(payload):
  return hashlib.sha256(json.dumps(payload, sort_keys=True, default=files.json_default).encode()).hexdigest()


def write_cached_analysis(path, out, manifest, data):
  """Writes an analysis cache entry: its manifest, its data with the study's files as paths relative to the study
  `out` (a moved or copied study links its own figures) and a checksum of both, which read_cached_analysis checks."""
  root = os.path.abspath(out)

  def rel(p):
    r = os.path.relpath(os.path.abspath(p), root)
    return p if r.startswith(os.pardir) else r  # Outside the study: kept as given.

  payload = json.loads(json.dumps({"manifest": manifest, "data": _relocate(data, rel)},
                                  default=files.json_default))  # As it reads back (tuples as lists).
  files.atomic_write_json(path, dict(payload, sha256=_checksum(payload)))


def read_cached_analysis(path, out):
  """(cache entry {"manifest", "data"} with its paths under the study `out`, None) from an analysis cache file;
  (None, None) when there is none, (None, why) when it is damaged (not JSON, not an entry, or a checksum that does not
  match what was written, as from an older version without one)."""
  try:
    cached = rundir.read_json(path)
  except (ValueError, OSError) as e:
    return None, (f"{path} is damaged: not valid JSON" if isinstance(e, ValueError) else
                  f"{path} is unreadable ({e.__class__.__name__})")
  if cached is None:
    return None, None
  if not isinstance(cached, dict) or not {"manifest", "data"} <= set(cached):
    return None, f"{path} is damaged: it holds no analysis"
  payload = {"manifest": cached["manifest"], "data": cached["data"]}
  if cached.get("sha256") != _checksum(payload):
    return None, f"{path} is damaged: its checksum does not match its contents"
  payload["data"] = _relocate(payload["data"], lambda p: p if os.path.isabs(p) else os.path.join(out, p))
  return payload, None


def _analysis_state(ctx, exp, reread=False, quiet=False):
  """(runs used, manifest, cache path, cached data or None when it must be computed) of one experiment. reread:
  reading back what a helper process just wrote (--force does not apply to it). quiet: a helper's check (the
  report process prints why it computes an analysis again)."""
  used = exp.analysis_runs(ctx)
  manifest = analysis_manifest(ctx, used)
  path = os.path.join(ctx.adir, f"{exp.id.lower()}.analysis.json")
  cached, problem = read_cached_analysis(path, ctx.cfg.out)
  if problem and not quiet and not reread:
    print(f"  {exp.id}: {problem}; computing it again", flush=True)
  fresh = cached is not None and cached["manifest"] == manifest and (reread or not ctx.cfg.force)
  png = isinstance(cached, dict) and isinstance(cached["data"], dict) and cached["data"].get("png")
  if fresh and png and not os.path.exists(png):
    # A figure is drawn with its analysis: one deleted since is drawn again by computing the analysis again.
    if not quiet and not reread:
      print(f"  {exp.id}: {png} is missing; computing {exp.id} again to draw it", flush=True)
    fresh = False
  return used, manifest, path, (cached["data"] if fresh else None)


# Relative cost of computing each analysis, for sharing them out between processes: measured on the demo (2-core
# AVX2 EPYC, 16 runs): F2 39 s, F3 90 s, F4 122 s, F5 16 s; the others are lighter.
ANALYSIS_COST = {"F2": 1.0, "F3": 2.2, "F4": 3.0}


def share_analyses(ids, workers):
  """`ids` (experiment ids) in `workers` groups of about equal ANALYSIS_COST, largest first (greedy); group 0 is
  the calling process's. Empty groups are dropped, so fewer ids than workers give fewer groups."""
  groups = [[] for _ in range(max(1, workers))]
  load = [0.0] * len(groups)
  for i in sorted(ids, key=lambda i: -ANALYSIS_COST.get(i, 0.5)):
    k = load.index(min(load))
    groups[k].append(i)
    load[k] += ANALYSIS_COST.get(i, 0.5)
  return [groups[0]] + [g for g in groups[1:] if g]


def run_analyses(ctx, experiments, workers=1, argv=None, only=None):
  """Computes (or reuses, while their inputs are unchanged) the analyses of the selected experiments into
  ctx.analyses; returns {id: manifest}.

  workers > 1 (with `argv`, the command line): the analyses to compute are shared out (share_analyses) between this
  process and workers - 1 helper processes (parallel.spawn_analyses), each writing its own cached analyses; this
  process then reads theirs back, and computes any a helper did not write. Each analysis is computed alone from the
  runs and its own seeds, so where it is computed does not change it. only: the ids this process computes (a helper:
  it computes those and nothing else)."""
  cache, counts = {}, {}

  def batches_for(model, stages=None):
    """The analysis batches of `model`; with `stages`, only as many leading images as those stages need (F4
    compares two low stages, which need far fewer images than ResNet50's block4)."""
    if model not in cache:
      cache[model] = analysis_batches(ctx.cfg, model)
    if not stages:
      return cache[model]
    key = (model, tuple(stages))
    if key not in counts:  # Counting builds the model; F4 asks once per panel.
      counts[key] = analysis_image_count(ctx.cfg, model, stages)
    return cache[model].head(counts[key])

  ctx.batches = batches_for
  chosen = set(ctx.cfg.experiments)
  selected = [exp for exp in experiments if exp.analysis is not None and exp.selected(chosen)
              and (only is None or exp.id in only)]
  states = {exp.id: _analysis_state(ctx, exp, quiet=only is not None) for exp in selected}
  todo = [exp.id for exp in selected if states[exp.id][3] is None and states[exp.id][0]]
  groups, helpers = [todo], []
  if workers > 1 and argv and only is None and len(todo) > 1:
    groups = share_analyses(todo, workers)
  mine = set(groups[0])
  helper_of = {i: k for k, g in enumerate(groups[1:]) for i in g}  # Experiment id -> index of its helper.
  # What a helper writes is read back only if its file changed since now: a helper that died leaves an older cache
  # entry, which --force (or a figure drawn since) must not let through.
  before = {i: _mtime(states[i][2]) for i in helper_of}

  def compute(exp):
    used, manifest, path, _ = states[exp.id]
    t = time.time()
    data = exp.analysis(ctx, used)
    write_cached_analysis(path, ctx.cfg.out, manifest, data)
    print(f"  {exp.id} computed in {time.time() - t:.0f} s from {len(used)} runs", flush=True)
    note = common.datapoint_notes(common.stage_records(data))
    if note:
      print(f"  {exp.id}: {note}", flush=True)
    keras.backend.clear_session()
    return data

  manifests = {}
  try:
    if helper_of:
      print(f"  analyses in {len(groups)} processes: {' | '.join(', '.join(g) for g in groups)}", flush=True)
      helpers = parallel.spawn_analyses(argv, groups[1:], max(1, (os.cpu_count() or 1) // len(groups)))
    for exp in selected:
      used, manifest, _, data = states[exp.id]
      if exp.id in mine:
        data = compute(exp)
      manifests[exp.id] = manifest
      ctx.analyses[exp.id] = data
    codes = parallel.wait(helpers)
  except BaseException:
    # Ctrl-C, SIGTERM or an error here, also while waiting: no helper goes on writing to a study left unlocked.
    for h in helpers:
      h.terminate()
    parallel.wait(helpers)
    raise
  for exp in selected:
    if exp.id not in helper_of:
      continue
    used, manifest, path, data = _analysis_state(ctx, exp, reread=True)  # What its helper wrote.
    if data is None or _mtime(path) == before[exp.id]:
      print(f"  {exp.id}: its helper process (exit code {codes[helper_of[exp.id]]}) left no new analysis; "
            "computing it here", flush=True)
      data = compute(exp)
    ctx.analyses[exp.id] = data
  return manifests


def _mtime(path):
  try:
    return os.stat(path).st_mtime_ns
  except OSError:
    return None


def pilot_power(cfg, pilot, experiments):
  """Prints, for each claim of the study `cfg` describes, the seeds and test images it needs to be decidable,
  from the finished study in `pilot` run with the same flags (experiments/power.py). Reads the pilot's runs and its
  cached analyses (those whose inputs are unchanged); trains and computes nothing. Returns the lines printed."""
  if not os.path.isdir(pilot):
    raise UsageError(f"--pilot={pilot} is not a folder: give a finished study's --out")
  if not os.path.exists(os.path.join(pilot, "plan.json")):
    raise UsageError(f"--pilot={pilot} holds no study (no plan.json): give a finished study's --out")
  plan.read_plan(pilot)  # A damaged plan.json: its own line.
  pcfg = dataclasses.replace(cfg, out=pilot)
  runs = plan.plan_runs(pcfg, experiments)
  ctx = common.load_context(pcfg, runs)
  if not ctx.results:
    raise UsageError(f"--pilot={pilot} has no finished run of this plan: run it with the same flags first")
  chosen = set(cfg.experiments)
  for exp in experiments:
    if exp.analysis is None or not exp.selected(chosen):
      continue
    cached, _ = read_cached_analysis(os.path.join(pilot, "analysis", f"{exp.id.lower()}.analysis.json"), pilot)
    if cached is not None and cached["manifest"] == analysis_manifest(ctx, exp.analysis_runs(ctx)):
      ctx.analyses[exp.id] = cached["data"]
  lines = power.pilot_text(ctx, experiments)
  for r, why in ctx.damaged.items():
    lines.append(f"left out of the pilot: {r.name}: {why}")
  print("\n".join(lines), flush=True)
  return lines


def run_study(cfg, stage="all", argv=None, pilot=None):
  """Runs the study: stage "all" (sweep, analyses, report), "train" (sweep only, e.g. one shard), "report"
  (analyses and report over whatever runs are finished) or "plan" (list the runs; with `pilot`, a finished study's
  folder, also the power each claim needs: pilot_power). With `argv` (the command line) and cfg.parallel_runs above
  1 (or auto), the sweep runs in that many processes (experiments/parallel.py). Returns the report path or None."""
  if pilot is not None and stage != "plan":
    raise UsageError("--pilot goes with --study_stage=plan (it reads a finished study and trains nothing)")
  t0 = parallel.started_time(time.time())
  n_procs, intra_op, gpus = 1, None, 0
  if stage in ("all", "train") and argv and not os.environ.get(parallel.CHILD_ENV):
    gpus = parallel.gpu_count()
    n_procs, intra_op = parallel.resolve(cfg.parallel_runs, gpus, os.cpu_count() or 1)
  # Thread pools and visible GPUs are set before TensorFlow's first op, here and in every child (whose
  # environment says how).
  only = parallel.analysis_helper_ids()  # Set in a helper of a report process: the analyses it computes.
  # A GPU child has no thread count of its own (TensorFlow's default pools).
  threads = os.environ.get("TF_NUM_INTRAOP_THREADS") if os.environ.get(parallel.CHILD_ENV) or only else None
  parallel.configure(intra_op or (int(threads) if threads else None), gpus if n_procs > 1 else 0)
  experiments = catalog.experiments()
  check_out(cfg.out)
  workers = 1  # Processes for the analyses (run_analyses), checked before anything is read.
  if stage in ("all", "report") and argv and only is None and not os.environ.get(parallel.CHILD_ENV):
    workers = parallel.analysis_workers(cfg.parallel_runs, os.cpu_count() or 1,
                                        gpus if stage == "all" else parallel.gpu_count())
  if stage == "report":
    plan.read_plan(cfg.out)
    if cfg.overwrite:
      raise UsageError("--overwrite retrains runs, and --study_stage=report trains none: pass it to the study "
                       "(--study_stage=all or train)")
  runs = plan.plan_runs(cfg, experiments)
  sources = plan.source_plan(cfg, runs)
  if stage == "plan":
    print(f"study plan: {len(runs)} training runs, sources {sources}", flush=True)
    for r in runs:
      diff = plan.run_differences(cfg, r, sources)
      problem = plan.result_problem(plan.run_dir(cfg, r))
      state = (f"  (other settings: {', '.join(diff)} differ)" if diff else f"  (unfinished: {problem})" if problem
               else "  (done)" if plan.is_done(plan.run_dir(cfg, r)) else "")
      print(f"  {r.name}{state}", flush=True)
    design_note = stats.pairing_note(plan.arm_seed_counts(runs))
    if design_note:
      print(design_note, flush=True)
    if pilot is not None:
      pilot_power(cfg, pilot, experiments)
    return None
  check_inputs(cfg, runs, sources)
  # The runs' recorded settings, before anything is written or trained.
  stale = check_runs(cfg, plan.shard_runs(cfg, runs), sources) if stage in ("all", "train") else {}
  os.makedirs(cfg.out, exist_ok=True)
  if stage in ("all", "train"):
    children = []
    # No more processes than unfinished runs: on a finished sweep each child would import TensorFlow for nothing
    # (7 s a re-run here). The threads were sized before planning (planning builds models, which fixes TensorFlow's
    # pools), so a last run alone keeps its share.
    todo = [r for r in plan.shard_runs(cfg, runs)
            if cfg.force or r in stale or not plan.is_done(plan.run_dir(cfg, r))]
    n_procs = min(n_procs, max(1, len(todo)))
    if n_procs > 1:
      print(f"parallel runs: {n_procs} processes" + (f", {intra_op} intra-op thread(s) each" if intra_op else ""),
            flush=True)
      children = parallel.spawn(n_procs - 1, argv, intra_op, gpus, started=t0)
    try:
      run_sweep(cfg, runs, sources, n_procs, started=t0)
    except BaseException:
      for c in children:
        c.terminate()
      raise
    finally:
      codes = parallel.wait(children)
    if any(codes):
      print(f"warning: parallel children exited with {codes}; this process finished their runs", flush=True)
  if stage == "train" or cfg.shard[1] > 1:
    if os.environ.get(parallel.CHILD_ENV):
      print(f"== this sweep process's runs are done  (elapsed {_fmt_seconds(time.time() - t0)})", flush=True)
    return None
  if intra_op is not None:
    # This process runs on its share of the cores (its thread pools cannot grow back): the analyses get a fresh
    # process with all of them (4.5 of the demo's minutes ran on one of two cores before).
    print(f"== analyses and report: a fresh process with all {os.cpu_count()} cores  (elapsed "
          f"{_fmt_seconds(time.time() - t0)})", flush=True)
    code = parallel.run_report(argv, t0, workers)
    if code:
      raise SystemExit(code)  # The report process printed why.
    return os.path.join(cfg.out, "report.md")
  missing = [r.name for r in runs if not plan.is_done(plan.run_dir(cfg, r))]
  if missing and only is None:
    print(f"warning: {len(missing)} runs unfinished, left out of the report: {', '.join(missing[:5])}"
          + (" ..." if len(missing) > 5 else ""), flush=True)
  ctx = common.load_context(cfg, runs)
  check_loaded(ctx, sources)
  for res in ctx.results.values():  # The test predictions are read now: check_unchanged then covers them too.
    _ = res.predictions
  if only is not None:
    # A helper of a report process, which holds the analysis lock and writes the report.
    run_analyses(ctx, experiments, only=only)
    return None
  print(f"== analyses  (elapsed {_fmt_seconds(time.time() - t0)})", flush=True)
  analysis_dir = os.path.join(cfg.out, "analysis")
  while True:
    with locks.hold(analysis_dir) as lock:
      if lock is not None:
        manifests = run_analyses(ctx, experiments, workers=workers, argv=argv)
        check_unchanged(ctx)
        print(f"== report  (elapsed {_fmt_seconds(time.time() - t0)})", flush=True)
        path = report.write_report(ctx, experiments, manifests, sources, wall_seconds=time.time() - t0)
        break
    print(f"  analyses held by {locks.describe(locks.holder(analysis_dir))}: waiting", flush=True)
    locks.wait_for(lambda: False, analysis_dir)
  print(f"report written to {path}  (elapsed {_fmt_seconds(time.time() - t0)})", flush=True)
  return path
