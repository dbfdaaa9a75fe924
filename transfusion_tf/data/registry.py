"""The dataset registry: one entry per `--dataset` name, mapping it to its task and its builder.

`pipeline.build_data` looks the name up here and never branches on dataset names; the `--dataset` flag lists
`names()`; the experiments ask `task_name(dataset)` or `task_spec(dataset)`.

A builder is a function `build(task, options, image_size) -> (sources, description)`:
  task         the TaskSpec the registry made from the entry's task name, its `task_options` and the user's options
               (binary_head, uncertainty_policy);
  options      a `DataOptions` (folders, CSV columns, caps, split seed, validation policy, ...);
  image_size   the model's input side in px (the synthetic generator draws at that size);
  sources      {"train", "validation", "test"} -> ArraySource | FileSource | TfdsSource (see `sources.py`), labels
               already through the task's label policy; caps (options.caps) applied, train_subset not (build_data
               applies it to every dataset alike);
  description  one line naming what was read, for logs and result.json.

How to add a dataset:
  1. Write its reader in one file of this package, e.g. `data/mydata.py`, with a builder as above. Use
     `records.py` for what readers share (FileRecords, check_image_files, patient_split, cap_records, load_tfds,
     read_csv_rows) and `sources.py` to wrap the result (file_source, tfds_source).
  2. Register it below: `register("mydata", task="retina", build=mydata.build, summary="...")`.
  If it needs a new option, add a field to `DataOptions` and a flag in `data/flags.py` (data_kwargs_from_flags).
  A dataset whose task depends on its files (image_csv: the labels CSV decides binary, classes or multi-label)
  registers `make_task=fn(options) -> TaskSpec` too; `task_spec` then needs the options.
`tests/registry_test.py` builds a batch from every registered dataset: give yours a fixture there.
"""
import dataclasses
import types

from transfusion_tf.data import chexpert
from transfusion_tf.data import generated
from transfusion_tf.data import image_csv
from transfusion_tf.data import imagenet
from transfusion_tf.data import retina
from transfusion_tf.data import synthetic
from transfusion_tf.data import tasks as tasks_lib
from transfusion_tf.errors import UsageError


@dataclasses.dataclass(frozen=True)
class DataOptions:
  """What a dataset builder may read besides the task and the image size; every field has a default.

  data_dir, labels_csv, image_column, label_column: folder sources (retina_csv, chexpert, image_csv).
  label_columns, patient_column, split_column, num_classes: image_csv's CSV (see image_csv.py).
  tfds_manual_dir, tfds_config, tfds_data_dir: TFDS sources (tfds_data_dir: where prepared TFDS data lives).
  num_train, num_val, num_test: synthetic: examples to generate (defaults 2000/1000/1000); real data: caps
    (stratified seeded subsets for folder sources, the first N records for TFDS).
  train_subset: the small-data regime: a stratified seeded subset of N training examples (PAPER: 5,000).
  uncertainty_policy, frontal_only: CheXpert. binary_head: retina single-sigmoid head.
  on_bad_image: "fail" | "skip"; validate_images: "quick" | "full" | "off" (see records.check_image_files).
  augment: training augmentation on/off; augmentation: a pipeline.Augmentation to change its strengths; flips:
    None (the task's) or "none" | "lr" | "lr_ud", overriding the task's flips (--flips).
  preprocessing: overrides the model's preprocessing mode.
  synthetic_difficulty, cache_dir: the synthetic generator's (cache_dir also holds image-check sidecars).
  split_seed: held-out splits, synthetic generation and subsets (fixed across training seeds by default).
  val_fraction, test_fraction: held-out shares for sources without an official split (None: the dataset's default;
    CheXpert val: 0.05; retina_csv: 0.1 each; image_csv: 0.15 each; imagenet_tfds val: 0.01).
  """
  data_dir: str = None
  labels_csv: str = None
  image_column: str = None
  label_column: str = None
  label_columns: tuple = None
  patient_column: str = None
  split_column: str = None
  num_classes: int = None
  tfds_manual_dir: str = None
  tfds_config: str = None
  tfds_data_dir: str = None
  num_train: int = None
  num_val: int = None
  num_test: int = None
  train_subset: int = None
  uncertainty_policy: str = "per_pathology"
  frontal_only: bool = False
  on_bad_image: str = "fail"
  validate_images: str = "quick"
  augment: bool = True
  flips: str = None
  preprocessing: str = None
  synthetic_difficulty: float = None
  cache_dir: str = None
  split_seed: int = 0
  binary_head: bool = False
  val_fraction: float = None
  test_fraction: float = None
  augmentation: object = None

  @property
  def caps(self):
    """{"train", "validation", "test"} -> num_train, num_val, num_test."""
    return {"train": self.num_train, "validation": self.num_val, "test": self.num_test}

  @property
  def check_kwargs(self):
    """The image-check keywords every folder reader takes."""
    return dict(on_bad_image=self.on_bad_image, validate_images=self.validate_images, cache_dir=self.cache_dir)


@dataclasses.dataclass(frozen=True)
class Dataset:
  """A registry entry. task: one of tasks.TASKS; build: see the module docstring; summary: for --help;
  task_options: fixed get_task keywords, e.g. {"num_classes": 1000} for ImageNet; make_task: None, or
  fn(DataOptions) -> TaskSpec for a dataset whose files decide its task (image_csv)."""
  name: str
  task: str
  build: object
  summary: str
  task_options: types.MappingProxyType
  make_task: object = None


_REGISTRY = {}


def register(name, task, build, summary, make_task=None, **task_options):
  """Adds a dataset under `name`; a name can be registered once."""
  if name in _REGISTRY:
    raise ValueError(f"dataset {name!r} is already registered")
  if task not in tasks_lib.TASKS:
    raise ValueError(f"dataset {name!r}: unknown task {task!r}; known: {', '.join(tasks_lib.TASKS)}")
  _REGISTRY[name] = Dataset(name, task, build, summary, types.MappingProxyType(dict(task_options)), make_task)


register("synthetic_retina", "retina", generated.build, "embedded synthetic fundus images, DR grades 0-4")
register("retina_csv", "retina", retina.build_csv_folder, "image folder + APTOS/EyePACS labels CSV")
register("eyepacs_tfds", "retina", retina.build_eyepacs_tfds, "TFDS diabetic_retinopathy_detection")
register("synthetic_cxr", "cxr", generated.build, "embedded synthetic chest X-rays, 5 CheXpert findings")
register("chexpert", "cxr", chexpert.build_folder, "the CheXpert folder (train.csv, valid.csv)")
register("chexpert_tfds", "cxr", chexpert.build_tfds, "TFDS chexpert")
register("synthetic_source", "source", generated.build, "embedded synthetic source task (ImageNet stand-in)",
         num_classes=synthetic.NUM_CLASSES["source"])
register("imagenet_tfds", "source", imagenet.build_tfds, "TFDS imagenet2012", num_classes=imagenet.NUM_CLASSES)
register("image_csv", "image", image_csv.build, "any image folder + labels CSV: binary, classes or multi-label",
         make_task=image_csv.task_from_options)


def names():
  """Every registered dataset name, in registration order."""
  return tuple(_REGISTRY)


def get(dataset):
  """The `Dataset` entry of `dataset`; a UsageError listing the known names for any other."""
  if dataset not in _REGISTRY:
    raise UsageError(f"unknown --dataset={dataset!r}; known: {', '.join(_REGISTRY)}")
  return _REGISTRY[dataset]


def task_name(dataset):
  """Dataset name (e.g. "eyepacs_tfds") -> task name ("retina", "cxr" or "source")."""
  return get(dataset).task


def task_spec(dataset, binary_head=False, uncertainty_policy="per_pathology", options=None):
  """The TaskSpec a dataset trains: its task with the entry's fixed options (e.g. ImageNet's 1000 classes), or,
  for a dataset whose files decide it (image_csv), what its files say: then `options` (a DataOptions, or a dict of
  its fields such as a run's data_kwargs) must name them."""
  entry = get(dataset)
  if entry.make_task is not None:
    if options is None:
      raise ValueError(f"the task of --dataset={dataset} comes from its files: pass options=DataOptions(...)")
    return entry.make_task(options_from(options))
  return tasks_lib.get_task(entry.task, binary_head=binary_head, uncertainty_policy=uncertainty_policy,
                            **entry.task_options)


def options_from(options):
  """A DataOptions from a DataOptions or a dict of its fields (unknown keys, e.g. "dataset", are ignored)."""
  if isinstance(options, DataOptions):
    return options
  known = {f.name for f in dataclasses.fields(DataOptions)}
  return DataOptions(**{k: v for k, v in dict(options).items() if k in known})


def build_sources(dataset, options, image_size):
  """Runs the builder of `dataset`: returns (TaskSpec, {split: source}, description)."""
  entry = get(dataset)
  task = task_spec(dataset, binary_head=options.binary_head, uncertainty_policy=options.uncertainty_policy,
                   options=options)
  sources, description = entry.build(task, options, int(image_size))
  return task, sources, description
