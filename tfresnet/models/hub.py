"""TF Hub image modules as Keras 3 layers.

`tensorflow_hub.KerasLayer` is built on `tf_keras` and cannot sit inside a Keras 3 model, and
`keras.layers.TFSMLayer` keeps TensorFlow's `:0` variable names, which break optimizers with
slots (Adam's `..._momentum`). `HubLayer` loads a TF2 reusable SavedModel (the format of TF Hub's
`resnet_v2_50/feature_vector`) and tracks its variables as Keras variables with clean names, so
the module trains with any Keras optimizer, exports with `model.export()` and reloads from its
config.
"""

from __future__ import annotations

import math
import os
import re

import keras
import tensorflow as tf

from tfresnet import internals, paths

# Where tfhub.dev and Kaggle downloads go when TFHUB_CACHE_DIR is not set: a folder of the
# user's own (tensorflow_hub's default is a shared folder under /tmp that another user can fill
# first).
HUB_CACHE = os.path.join("~", ".keras", "tfhub_modules")
# Handles `tensorflow_hub` downloads; any other is a folder, local or on a store (`gs://...`).
WEB_SCHEMES = ("http://", "https://")


def resolve_handle(handle: str) -> str:
    """Returns the SavedModel directory of a Hub handle, downloading it once when it is a URL.

    Web URLs (tfhub.dev, Kaggle) go through `tensorflow_hub.resolve`, which caches them in
    `TFHUB_CACHE_DIR`, or when it is not set in `hub_cache_dir()`, a folder of the user's own.
    A folder, local or on any file system TensorFlow has (`gs://bucket/module`), must exist
    and hold a SavedModel; it is loaded from where it is.

    Example:
        resolve_handle("https://tfhub.dev/google/imagenet/resnet_v2_50/feature_vector/5")
        # '/home/me/.keras/tfhub_modules/...'
    """
    if not handle.startswith(WEB_SCHEMES):
        if not paths.isdir(handle):
            raise FileNotFoundError(
                f"Hub module not found: {handle!r} is not a directory. Pass the folder of a "
                "TF2 SavedModel (the one holding saved_model.pb) or a tfhub.dev/Kaggle URL."
            )
        if not tf.saved_model.contains_saved_model(handle):
            raise ValueError(
                f"{handle!r} holds no SavedModel (no saved_model.pb). Pass the folder of a "
                "TF2 SavedModel, such as an unpacked resnet_v2_50/feature_vector module."
            )
        return handle
    import tensorflow_hub as hub

    cache = os.environ.get("TFHUB_CACHE_DIR") or hub_cache_dir()
    previous = os.environ.get("TFHUB_CACHE_DIR")
    os.environ["TFHUB_CACHE_DIR"] = cache  # tensorflow_hub reads it on each call
    try:
        return hub.resolve(handle)
    except Exception as error:  # network and cache errors come in many types
        raise OSError(
            f"Could not download the Hub module {handle!r} ({type(error).__name__}: {error}). "
            "Without network access, download it elsewhere, unpack it and pass its local path "
            "(backbone='hub:/path/to/module'), or point TFHUB_CACHE_DIR to a cache holding it."
        ) from None
    finally:
        if previous is None:
            del os.environ["TFHUB_CACHE_DIR"]


def hub_cache_dir() -> str:
    """The user's own Hub cache, `$KERAS_HOME/tfhub_modules` (default `~/.keras/tfhub_modules`),
    created readable by the user only; a folder there owned by another user is refused.

    Example:
        hub_cache_dir()
        # '/home/me/.keras/tfhub_modules'
    """
    home = os.environ.get("KERAS_HOME")
    path = os.path.expanduser(os.path.join(home, "tfhub_modules") if home else HUB_CACHE)
    os.makedirs(path, mode=0o700, exist_ok=True)
    if hasattr(os, "getuid") and os.stat(path).st_uid != os.getuid():
        raise PermissionError(
            f"The Hub cache {path!r} belongs to another user. Set TFHUB_CACHE_DIR to a folder of "
            "your own."
        )
    return path


def _clean_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name.split(":")[0])


@keras.saving.register_keras_serializable(package="tfresnet")
class HubLayer(keras.layers.Layer):
    """A TF2 reusable SavedModel (e.g. TF Hub's `resnet_v2_50/feature_vector`) as a layer.

    The module is called as `module(images, training=False)`: its BatchNormalization always
    runs in inference mode, as the Keras fine-tuning guide prescribes, so its moving statistics
    never change, while its weights train when the layer is trainable. Those weights include
    BatchNorm's scale and shift (gamma and beta, trainable variables of the module): unlike a
    Keras backbone's BatchNorm layers, they train wherever their layer is unfrozen. The
    module's own "layers" (its variables grouped by name scope) can be frozen by index with
    `tfresnet.freeze`.

    Args:
        handle: A tfhub.dev or Kaggle URL, or a local directory holding the SavedModel.
        trainable: Whether the module's weights train.
        frozen_layers: The module's layers (see `module_layers`) that stay frozen while the
            layer trains: what `tfresnet.freeze` sets, kept in the config so that a reloaded
            model trains the same layers.
        **kwargs: Passed to `keras.layers.Layer` (e.g. `name`).

    Example:
        features = HubLayer("/models/resnet_v2_50_feature_vector", name="backbone")
        features(tf.zeros((1, 224, 224, 3))).shape
        # TensorShape([1, 2048])
    """

    def __init__(self, handle: str, trainable: bool = False, frozen_layers: tuple[str, ...] = (), **kwargs):
        super().__init__(trainable=trainable, **kwargs)
        self.handle = handle
        self._module = tf.saved_model.load(resolve_handle(handle))
        if not callable(self._module) or not hasattr(self._module, "variables"):
            raise ValueError(
                f"The SavedModel at {handle!r} is not a reusable Hub module: it needs "
                "`__call__(images, training)` and `variables`. Received a SavedModel without them."
            )
        module_trainable = {id(v) for v in getattr(self._module, "trainable_variables", [])}
        # (Keras variable, the module's name scope for it, trainable in the module)
        self._module_variables = []
        for variable in self._module.variables:
            wrapped = keras.Variable(
                initializer=variable,
                trainable=id(variable) in module_trainable,
                dtype=variable.dtype,
                shape=variable.shape,
                name=_clean_name(variable.name),
            )
            self._track_variable(wrapped)
            scope = variable.name.rsplit("/", 1)[0]
            self._module_variables.append((wrapped, scope, id(variable) in module_trainable))
        self._build_at_init()
        unknown = sorted(set(frozen_layers) - set(self.module_layers))
        if unknown:
            raise ValueError(
                f"frozen_layers names layers the module at {handle!r} does not have: {unknown}. "
                f"Its layers: {self.module_layers}"
            )
        if trainable:
            self._freeze(frozen_layers)

    @property
    def module_layers(self) -> list[str]:
        """The module's layers: its variables' name scopes, in order of first use."""
        return list(dict.fromkeys(scope for _, scope, _ in self._module_variables))

    @property
    def frozen_layers(self) -> list[str]:
        """The module's layers whose trainable variables are frozen while the layer trains."""
        if not self.trainable:
            return []
        frozen = {
            scope
            for variable, scope, trainable in self._module_variables
            if trainable and not variable.trainable
        }
        return [scope for scope in self.module_layers if scope in frozen]

    def layer_parameters(self) -> list[tuple[str, int, int]]:
        """`(layer, trainable parameters, frozen parameters)` for each of the module's layers.

        Example:
            hub_layer.layer_parameters()[-1]
            # ('post_bn', 0, 8192)
        """
        counts = {scope: [0, 0] for scope in self.module_layers}
        for variable, scope, _ in self._module_variables:
            trains = self.trainable and variable.trainable
            counts[scope][0 if trains else 1] += math.prod(variable.shape)
        return [(scope, trainable, frozen) for scope, (trainable, frozen) in counts.items()]

    def set_trainable_layers(self, first_trainable: int) -> None:
        """Freezes the module's layers before `first_trainable`, unfreezes the rest.

        Variables the module itself marks non-trainable (BatchNorm statistics) stay so. With
        every layer frozen the whole layer becomes non-trainable, so that a later
        `layer.trainable = True` unfreezes it all.
        """
        layers = self.module_layers
        if first_trainable >= len(layers):
            self.trainable = False
            return
        self.trainable = True
        self._freeze(layers[:first_trainable])

    def _freeze(self, scopes) -> None:
        frozen = set(scopes)
        for variable, scope, trainable in self._module_variables:
            variable.trainable = trainable and scope not in frozen

    def call(self, inputs):
        return self._module(tf.cast(inputs, tf.float32), training=False)

    def compute_output_shape(self, input_shape):
        outputs = self._module(tf.zeros((1, *input_shape[1:]), tf.float32), training=False)
        return (input_shape[0], *outputs.shape[1:])

    @classmethod
    def from_config(cls, config, custom_objects=None, safe_mode=None):
        """Rebuilds the layer from its config, refused in Keras's safe mode.

        Rebuilding loads (and downloads) the SavedModel the handle names and runs its graph,
        which can do anything the user can (write files, for one): Keras refuses its own
        `TFSMLayer` for the same reason. Outside a deserialization scope (a direct call), safe
        mode is assumed, as Keras does.

        Example:
            HubLayer.from_config(layer.get_config(), safe_mode=False)
        """
        if safe_mode is None:
            safe_mode = internals.in_safe_mode()
        if safe_mode is not False:
            raise ValueError(
                f"Refused to load the TF Hub module {config.get('handle')!r} of a tfresnet.HubLayer "
                "in Keras's safe mode: loading it runs the SavedModel's code. If you trust the "
                "file, load it with keras.saving.load_model(path, safe_mode=False) or call "
                "keras.config.enable_unsafe_deserialization() first."
            )
        return cls(**config)

    def get_config(self):
        return {**super().get_config(), "handle": self.handle, "frozen_layers": self.frozen_layers}
