"""tf.data sources and transforms: image folders, CSV files, TFDS datasets and arrays in,
batches out.

Every loader returns an `ImageData` whose datasets yield `(images, labels)` batches: images
float32 RGB of shape `(batch, image_size, image_size, 3)` holding raw pixel values in
[0, 255] (each model normalises them in its own first layer), labels int32 class indices.
The loaders live in `folder`, `csv_labels`, `tfds` and `arrays`, what they share in
`pipeline`, and the transforms, `decode_for_eval` included, in `transforms`.
"""

from tfresnet.data.arrays import from_arrays
from tfresnet.data.csv_labels import from_csv
from tfresnet.data.folder import IMAGE_EXTENSIONS, from_folder
from tfresnet.data.pipeline import AUGMENTATIONS, ImageData
from tfresnet.data.tfds import from_tfds
from tfresnet.data.transforms import CROP_FRACTION, decode_for_eval

__all__ = [
    "AUGMENTATIONS",
    "CROP_FRACTION",
    "IMAGE_EXTENSIONS",
    "ImageData",
    "decode_for_eval",
    "from_arrays",
    "from_csv",
    "from_folder",
    "from_tfds",
]
