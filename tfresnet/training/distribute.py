"""Where a run computes: the distribution strategy, mixed precision, and who writes files.

`resolve_strategy()` picks the strategy for this machine (or cluster), `resolve_mixed_precision`
turns `"auto"` into a decision, `precision_policy` applies it for the length of a block, and
`is_chief` says which process of a multi-worker run writes the outputs.
"""

from __future__ import annotations

import contextlib
import json
import os

import keras
import tensorflow as tf

from tfresnet import internals

MIXED_PRECISION = ("auto", "on", "off")


def resolve_strategy() -> tf.distribute.Strategy:
    """Picks the distribution strategy a run on this machine should use.

    `MultiWorkerMirroredStrategy` when `TF_CONFIG` names a cluster (training across
    machines, one process per machine with the same command), `TPUStrategy` when a TPU is
    attached (Colab), `MirroredStrategy` with several GPUs, else the default strategy. Call it
    at the start of a program, before any other TensorFlow work: multi-worker training
    requires it.

    Example:
        strategy = resolve_strategy()
        with strategy.scope():
            model = build_classifier(3, weights=None)
    """
    tf_config = read_tf_config()
    if tf_config.get("cluster"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    with contextlib.suppress(ValueError, tf.errors.NotFoundError, RuntimeError):
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


TF_CONFIG_EXAMPLE = (
    '{"cluster": {"worker": ["host1:port", "host2:port"]}, "task": {"type": "worker", "index": 0}}'
)


def read_tf_config() -> dict:
    """`TF_CONFIG` as a dict ({} when unset), checked: a cluster of jobs, each a list of
    "host:port" addresses, and this process's task (a type the cluster names, an index in it).

    Raises:
        ValueError: `TF_CONFIG` is not such a JSON object; the message says what is wrong.

    Example:
        read_tf_config()["task"]  # TF_CONFIG='{"cluster": {"worker": ["a:1", "b:1"]}, "task": {...}}'
        # {'type': 'worker', 'index': 0}
    """
    text = os.environ.get("TF_CONFIG", "")
    try:
        config = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON ({error}). Set it like {TF_CONFIG_EXAMPLE}") from None
    problem = _tf_config_problem(config)
    if problem:
        raise ValueError(
            f"TF_CONFIG {problem}. Received: {text.strip()[:200]}; set it like {TF_CONFIG_EXAMPLE}"
        )
    return config


def _tf_config_problem(config) -> str | None:
    """What is wrong with a parsed `TF_CONFIG`, or None."""
    if not isinstance(config, dict):
        return "must be a JSON object"
    cluster, task = config.get("cluster") or {}, config.get("task") or {}
    if not isinstance(cluster, dict) or not all(
        isinstance(hosts, list) and hosts and all(isinstance(host, str) for host in hosts)
        for hosts in cluster.values()
    ):
        return 'needs "cluster" to map each job to a list of "host:port" addresses'
    if not cluster:
        return None
    if not isinstance(task, dict) or task.get("type") not in cluster:
        return f'needs "task" with a "type" among the cluster\'s jobs ({", ".join(cluster)})'
    index, hosts = task.get("index", 0), cluster[task["type"]]
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(hosts):
        return f'needs "task" "index" to be a position in the {task["type"]!r} list (0 to {len(hosts) - 1})'
    return None


def strategy_name(strategy: tf.distribute.Strategy) -> str:
    """The public name of a strategy's class, as `tf.distribute` exports it; `"default"` for
    the default strategy (one device, no distribution).

    Example:
    >>> strategy_name(tf.distribute.MultiWorkerMirroredStrategy())
    'MultiWorkerMirroredStrategy'
    """
    for name in ("MultiWorkerMirroredStrategy", "MirroredStrategy", "TPUStrategy", "OneDeviceStrategy"):
        if isinstance(strategy, getattr(tf.distribute, name)):
            return name
    name = type(strategy).__name__
    return "default" if name == "_DefaultDistributionStrategy" else name


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run's files (always, outside multi-worker training)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "chief" or (
        not has_chief and resolver.task_type == "worker" and resolver.task_id == 0
    )


def resolve_mixed_precision(mixed_precision: str) -> bool:
    """`"auto"` means on when a GPU is visible; `"on"` and `"off"` are what they say."""
    if mixed_precision not in MIXED_PRECISION:
        raise ValueError(
            f"mixed_precision must be one of {MIXED_PRECISION}. Received: mixed_precision={mixed_precision!r}"
        )
    if mixed_precision == "auto":
        return bool(tf.config.list_physical_devices("GPU"))
    return mixed_precision == "on"


@contextlib.contextmanager
def precision_policy(mixed: bool):
    """Sets Keras's global dtype policy to mixed float16 (or float32) inside the block only.

    Example:
        with precision_policy(resolve_mixed_precision("auto")):
            model = build_classifier(3, weights=None)
    """
    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def work_around_multi_worker_fit(model: keras.Model) -> None:
    """Lets Keras 3's `fit()` run under `MultiWorkerMirroredStrategy` (keras-team/keras#20585).

    Keras 3 averages one batch across workers eagerly to build the model, which that strategy
    cannot do, and averages each step's scalar logs "along axis 0", which scalars lack. The
    model and optimizer are built here instead (fit() runs inside `strategy.scope()`, where
    Keras finds the strategy), and the step logs get a batch axis of length 1.
    """
    model.optimizer.build(model.trainable_variables)
    internals.forget_distribute_strategy(model)
    for name in ("train_step", "test_step"):
        step = getattr(model, name)

        def with_batch_axis(data, step=step):
            return {key: tf.reshape(value, [1]) for key, value in step(data).items()}

        setattr(model, name, with_batch_axis)
