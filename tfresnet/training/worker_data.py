"""What `fit` trains on: the training batches of one machine, or under a
`MultiWorkerMirroredStrategy` each worker's own share of the training files.

Given one dataset, TensorFlow shards a list of file names across workers by its batches
(`AutoShardPolicy.DATA`): every worker would read, decode and augment every image and keep its
share of the batches. For data read from files, each worker here builds its batches from its
share of the file list instead (`ImageData.train_shard`), taken before anything is read: a
worker of `n` reads `ceil(num_train / n)` images a pass. Every step takes one batch of
`batch_size / replicas` from each replica, so the global batch, the steps per epoch and the
class weights are those of one machine. (With `drop_remainder`, a pass can hold a batch more
than an epoch takes; the next epoch goes on from there.) Arrays and TFDS data, and a batch
size that the replicas do not divide, keep TensorFlow's sharding: every worker reads them whole.

Example:
    fit_input = training_input(data, strategy, steps=steps_per_epoch(data), class_weights=None)
    model.fit(validation_data=data.validation, epochs=3, **fit_input)
"""

from __future__ import annotations

import warnings

import tensorflow as tf

from tfresnet.data import ImageData
from tfresnet.data.augment import mix_batches
from tfresnet.training.targets import loss_labels


def mixed_batches(
    dataset: tf.data.Dataset,
    data: ImageData,
    *,
    mixup: float = 0.0,
    cutmix: float = 0.0,
    seed: int | None = None,
) -> tf.data.Dataset:
    """`dataset`'s batches with the loss's labels (one-hot, or multi-hot rows), mixed as asked.

    Example:
        train = mixed_batches(data.train, data, mixup=0.2, seed=0)
    """
    return mix_batches(loss_labels(dataset, data), mixup=mixup, cutmix=cutmix, seed=seed)


def with_class_weights(dataset: tf.data.Dataset, class_weights: dict[int, float]) -> tf.data.Dataset:
    """Batches of `(images, labels)` as `(images, labels, sample_weights)`: each image weighed
    by the class of its label row's largest entry, as `fit(class_weight=...)` does (it cannot
    for a distributed dataset). A class missing from `class_weights` weighs 1.

    Example:
        weighted = with_class_weights(train, {0: 0.8, 1: 1.4})
    """
    weights = tf.constant(
        [float(class_weights.get(label, 1.0)) for label in range(max(class_weights) + 1)], tf.float32
    )

    def weigh(images, labels):
        return images, labels, tf.gather(weights, tf.argmax(labels, axis=-1))

    return dataset.map(weigh, num_parallel_calls=tf.data.AUTOTUNE)


def shares_files(data: ImageData, strategy: tf.distribute.Strategy) -> bool:
    """Whether each worker of `strategy` trains on its own share of `data`'s training files:
    under a `MultiWorkerMirroredStrategy`, for data read from files, when the replicas divide
    the batch size.

    Example:
        shares_files(tfresnet.from_folder("flowers/", batch_size=32), strategy)  # 2 workers
        # True
    """
    return (
        isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        and data.train_shard is not None
        and bool(data.batch_size)
        and data.batch_size % strategy.num_replicas_in_sync == 0
    )


def images_per_worker(data: ImageData, strategy: tf.distribute.Strategy) -> int:
    """The training images each worker reads a pass: `ceil(num_train / workers)` where
    `shares_files`, else all of them.

    Example:
        images_per_worker(data, strategy)  # 21 training images, 2 workers
        # 11
    """
    if not shares_files(data, strategy):
        return data.num_train
    cluster = strategy.cluster_resolver.cluster_spec().as_dict()
    workers = max(len(cluster.get("chief", [])) + len(cluster.get("worker", [])), 1)
    return -(-data.num_train // workers)


def worker_dataset(
    data: ImageData,
    context: tf.distribute.InputContext,
    *,
    mixup: float = 0.0,
    cutmix: float = 0.0,
    seed: int | None = None,
    class_weights: dict[int, float] | None = None,
) -> tf.data.Dataset:
    """The endless training batches of one worker (`context.input_pipeline_id` of
    `context.num_input_pipelines`): its share of the files (`ImageData.train_shard`) in
    batches of the per-replica batch size, with the loss's labels, mixed, and weighed by class.

    Example:
        context = tf.distribute.InputContext(2, 1, num_replicas_in_sync=2)  # worker 1 of 2
        batches = worker_dataset(data, context, class_weights={0: 0.8, 1: 1.4})
    """
    index, count = context.input_pipeline_id, context.num_input_pipelines
    shard = data.train_shard(index, count, context.get_per_replica_batch_size(data.batch_size))
    seed = None if seed is None else seed + index
    dataset = mixed_batches(shard, data, mixup=mixup, cutmix=cutmix, seed=seed)
    if class_weights:
        dataset = with_class_weights(dataset, class_weights)
    return dataset.repeat()


def training_input(
    data: ImageData,
    strategy: tf.distribute.Strategy,
    *,
    steps: int,
    class_weights: dict[int, float] | None,
    mixup: float = 0.0,
    cutmix: float = 0.0,
    seed: int | None = None,
) -> dict:
    """The training arguments of `fit` (`x`, `class_weight`, `steps_per_epoch`): each worker's
    batches of its share (`worker_dataset`, `steps` per epoch) where `shares_files`, else
    `data.train` mixed as asked, its epochs as long as the dataset.

    Example:
        model.fit(epochs=3, **training_input(data, strategy, steps=8, class_weights=None))
    """
    if not shares_files(data, strategy):
        if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and data.train_shard is not None:
            replicas = strategy.num_replicas_in_sync
            warnings.warn(
                f"batch_size={data.batch_size} does not split evenly among the {replicas} replicas: "
                f"every worker reads every training image and keeps its share of the batches. A "
                f"batch size that is a multiple of {replicas} lets each worker read only its share.",
                stacklevel=3,
            )
        batches = mixed_batches(data.train, data, mixup=mixup, cutmix=cutmix, seed=seed)
        return {"x": batches, "class_weight": class_weights, "steps_per_epoch": None}

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        return worker_dataset(
            data, context, mixup=mixup, cutmix=cutmix, seed=seed, class_weights=class_weights
        )

    batches = strategy.distribute_datasets_from_function(dataset_fn)
    return {"x": batches, "class_weight": None, "steps_per_epoch": steps}
