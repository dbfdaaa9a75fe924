"""Models: the CBR family, keras.applications wrappers, named stages, weight files and init schemes.

Public API:
  build_model(name, num_outputs, input_shape, weights=None, ...) -> keras.Model of logits
  initialize(model, scheme, source=None, seed=0, ...) -> info dict
  stage_names / stage_layers / stage_output / layers_up_to / conv1_layer
  preprocessing_mode / preprocess
  save_weight_file / read_weight_file / keras_cache_dir
"""
from transfusion_tf.models.init import SCHEMES, initialize, parse_scheme
from transfusion_tf.models.preprocessing import preprocess, preprocessing_mode
from transfusion_tf.models.stages import (architecture, conv1_layer, layers_up_to, stage_layers, stage_names,
                                          stage_output)
from transfusion_tf.models.weights import (IMAGENET_FILES, SourceWeights, keras_cache_dir, load_source,
                                           read_weight_file, save_weight_file)
from transfusion_tf.models.zoo import (MIN_SIZE, MODEL_NAMES, PAPER_PARAMS, build_model, check_model_name,
                                       paper_convention_count)
