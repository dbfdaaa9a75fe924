"""absl flags owned by the models package. Importing defines them once; `model_kwargs_from_flags` reads them."""
from absl import flags

from transfusion_tf.models import zoo

flags.DEFINE_enum("model", "cbr_tiny", list(zoo.MODEL_NAMES), "Architecture to build.")
flags.DEFINE_integer("image_size", 64, "Square input size in pixels (paper: 587 for RETINA, 224 for CheXpert).")
flags.DEFINE_string("init", "random",
                    "Init scheme: random, pretrained, meanvar, transfuse:<stage> (none, conv1, block1..block4, "
                    "mixedK, convK, all), slim or gabor.")
flags.DEFINE_string("weights", None,
                    "Source weights for pretrained/meanvar/transfuse/slim: 'imagenet' (Keras cache) or a .h5 path "
                    "(e.g. written by transfusion-pretrain).")
flags.DEFINE_list("cbr_widths", None, "CBR widths per layer, e.g. 32,64,128,256 (default: the paper's table).")
flags.DEFINE_float("width_multiplier", 1.0, "Multiplies every CBR / ResNet50 width (a narrow ResNet for quick runs).")
flags.DEFINE_boolean("cbr_bn_scale", True, "Give CBR BatchNorms a scale (gamma); false reproduces TF-Slim counts.")
flags.DEFINE_float("bn_momentum", None, "Momentum of every BatchNorm's moving statistics (default: Keras' 0.99). Short "
                   "runs evaluate with statistics that have not settled at 0.99; the quick and demo presets use 0.9.")
flags.DEFINE_boolean("zero_init_residual", None, "ResNet50: start every residual block's last BatchNorm gamma at 0, so "
                     "each block starts as its shortcut (default: on in transfusion-pretrain, whose source a standard "
                     "init leaves near chance, off elsewhere; in transfusion-study it reaches the ResNet50 runs only).")
flags.DEFINE_enum("gabor_frequency", "low", ["low", "high"], "Frequency set of the synthetic Gabor conv1 (--init=gabor).")
flags.DEFINE_enum("meanvar_bn", "identity", ["identity", "resample", "copy"],
                  "BatchNorm under --init=meanvar: identity (the paper's 'BN Identity Init': gamma 1, beta 0, moving "
                  "mean 0, variance 1), resample (gamma, beta drawn from the source moments) or copy (all four).")

FLAGS = flags.FLAGS


def model_kwargs_from_flags():
  """Returns build_model keyword arguments (other than name/outputs/shape/weights) from the parsed flags."""
  widths = tuple(int(w) for w in FLAGS.cbr_widths) if FLAGS.cbr_widths else None
  kwargs = dict(cbr_widths=widths, width_multiplier=FLAGS.width_multiplier, cbr_bn_scale=FLAGS.cbr_bn_scale,
                slim=FLAGS.init == "slim")
  if FLAGS.bn_momentum is not None:
    kwargs["bn_momentum"] = FLAGS.bn_momentum
  if FLAGS.zero_init_residual:
    kwargs["zero_init_residual"] = True
  return kwargs
