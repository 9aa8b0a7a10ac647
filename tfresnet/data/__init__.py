"""tf.data sources and transforms: image folders, CSV files, TFDS datasets and arrays in,
batches out.

Every loader returns an `ImageData` whose datasets yield `(images, labels)` batches: images
float32 RGB of shape `(batch, image_size, image_size, 3)` holding raw pixel values in
[0, 255] (each model normalises them in its own first layer), labels int32 class indices.
The loaders live in `folder`, `csv_labels`, `tfds` and `arrays`, what they share in
`pipeline`, the transforms, `decode_for_eval` included, in `transforms`, the check of an
image's size before it is decoded in `image_size`, the listing of a folder (local or on a
store) in `listing`, the check that each file is a usable image in `file_check`, the results of
both checks kept between runs in `check_cache`, and the example folder in `examples`.

Names are imported on first use (PEP 562): a command imports only the loaders it uses (TFDS
only for TFDS data).
"""

from __future__ import annotations

from tfresnet import lazy

# Public name -> the module that defines it.
_EXPORTS = {
    "AUGMENTATIONS": "tfresnet.data.pipeline",
    "CROP_FRACTION": "tfresnet.data.transforms",
    "IMAGE_EXTENSIONS": "tfresnet.data.folder",
    "ImageData": "tfresnet.data.pipeline",
    "decode_for_eval": "tfresnet.data.transforms",
    "from_arrays": "tfresnet.data.arrays",
    "from_csv": "tfresnet.data.csv_labels",
    "from_folder": "tfresnet.data.folder",
    "from_tfds": "tfresnet.data.tfds",
}

__all__ = list(_EXPORTS)


__getattr__, __dir__ = lazy.attach(__name__, _EXPORTS)
