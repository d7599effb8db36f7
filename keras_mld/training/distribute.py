"""Data-parallel training with ``tf.distribute`` (the training strategy of
Prokofiev & Sovrasov (arXiv:2209.06585) section 3.5, under replicas).

``tf.distribute`` is the engine: this module only picks the strategy, makes the input
sharding and the batch / learning-rate arithmetic explicit, and keeps files per the
multi-worker rules. Typical use (``keras-mld train --strategy ...`` does exactly this)::

    strategy = make_strategy("multiworker")          # FIRST, before any other TF op
    model, history = distributed_fit(lambda: keras_mld.build(...), train_ds, val_ds,
                                     recipe, run_dir, strategy=strategy)

- :func:`make_strategy`: ``default`` (no distribution), ``mirrored`` (all local GPUs, or
  the given devices), ``multiworker`` (``MultiWorkerMirroredStrategy``; the cluster comes
  from the ``TF_CONFIG`` environment variable), ``tpu`` (``TPUClusterResolver``; a clear
  ``ValueError`` when no TPU is reachable).
- Batch sizes are **global** (summed over all replicas of all workers); the per-replica
  batch is ``global / num_replicas_in_sync`` (:func:`per_replica_batch_size` refuses a
  remainder). :func:`scale_learning_rate` scales the recipe's learning rate from its
  reference batch (``data.reference_batch_size``, default ``data.batch_size``) to the
  global batch: ``none``, ``linear`` (Goyal et al. 2017) or ``sqrt`` (Krizhevsky 2014).
- Input sharding is set explicitly on every ``tf.data.Dataset`` (:func:`with_shard_policy`):
  ``FILE`` when the pipeline reads files through a tf.data reader (TFRecord / text / fixed
  length records; each worker then reads only its files, which needs at least as many files
  as workers), ``DATA`` otherwise (each worker runs the whole pipeline and keeps every
  ``num_workers``-th element: correct only if every worker produces the same order, so
  training pipelines must be seeded; ``make_dataset(..., seed=...)``).
- The model is built and compiled in ``strategy.scope()`` (``fit`` compiles in
  ``model.distribute_strategy.scope()``). SAM all-reduces its first-pass gradient (see
  :mod:`.sam`), Keras' EMA variables are mirrored and updated once per step from the
  all-reduced gradient: both equal the single-device run on the same global batch.
  BatchNormalization is synchronized across replicas by default
  (:func:`synchronized_batchnorm`), the exact mAP gathers its rows across replicas
  (:mod:`keras_mld.metrics.replicas`), and ``fit`` builds the model from the data's
  element spec (:func:`keras_mld.training.data_order.symbolic_build_from_spec`; Keras otherwise
  spends one reshuffle of the seeded pipeline under a strategy): with the same seed and
  global batch a replicated run trains, and logs, the single-device model.
- Files (:func:`worker_run_dir`): the chief (task ``chief``, or ``worker`` 0 without a
  chief) writes ``run_dir`` (``best.keras``, ``final.keras``, ``log.csv``,
  ``backup/``...). Every other worker runs the same callbacks (they may hold collective
  ops) into a private temporary directory, seeded with a copy of the chief's ``backup/``
  so that ``BackupAndRestore`` restores the same epoch everywhere (needs a file system
  shared by the workers), and deleted when training ends.
"""
import contextlib
import math
import os
import shutil
import tempfile
import warnings

import keras
import tensorflow as tf

from keras_mld.untrusted import parse_json

__all__ = ["STRATEGIES", "LR_SCALING", "SHARD_POLICIES", "make_strategy", "is_chief",
           "worker_run_dir", "with_shard_policy", "reads_files", "per_replica_batch_size",
           "scale_learning_rate", "reference_batch_size", "synchronized_batchnorm",
           "distributed_fit"]

STRATEGIES = ("default", "mirrored", "multiworker", "tpu")
LR_SCALING = ("none", "linear", "sqrt")
SHARD_POLICIES = ("auto", "file", "data", "off")
_READER_OPS = ("TFRecordDataset", "TFRecordDatasetV2", "TextLineDataset",
               "FixedLengthRecordDataset", "FixedLengthRecordDatasetV2")


# ---------------------------------------------------------------- strategies
def _tf_config():
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return None
    config = parse_json(raw, "make_strategy: TF_CONFIG")  # bounded; errors: ValueError
    if not isinstance(config, dict) or "cluster" not in config or "task" not in config:
        raise ValueError("make_strategy: TF_CONFIG must be a JSON object with 'cluster' "
                         "({'worker': ['host:port', ...], ...}) and 'task' "
                         "({'type': 'worker', 'index': i})")
    return config


def make_strategy(name="default", devices=None, tpu=None, communication="auto"):
    """A ``tf.distribute.Strategy`` by name (one of :data:`STRATEGIES`).

    Args:
        name: ``default`` (the current / no-op strategy), ``mirrored`` (one machine,
            ``devices`` or all GPUs, else the CPU), ``multiworker``
            (``MultiWorkerMirroredStrategy``, cluster and task from ``TF_CONFIG``; call it
            at program start, before any other TensorFlow op), ``tpu`` (``TPUStrategy``
            through ``TPUClusterResolver(tpu)``; ``tpu`` = name or ``grpc://`` address,
            ``None`` for the local / Cloud TPU VM).
        devices: device list for ``mirrored`` (e.g. ``["/gpu:0", "/gpu:1"]``).
        communication: ``auto``, ``ring`` or ``nccl`` collectives for ``multiworker``.
    """
    if name not in STRATEGIES:
        raise ValueError(f"make_strategy: name must be one of {STRATEGIES}, got {name!r}")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices)
    if name == "multiworker":
        impls = {"auto": tf.distribute.experimental.CommunicationImplementation.AUTO,
                 "ring": tf.distribute.experimental.CommunicationImplementation.RING,
                 "nccl": tf.distribute.experimental.CommunicationImplementation.NCCL}
        if communication not in impls:
            raise ValueError(f"make_strategy: communication must be one of {sorted(impls)}, "
                             f"got {communication!r}")
        if _tf_config() is None:
            warnings.warn("make_strategy: TF_CONFIG is not set; 'multiworker' runs as a "
                          "single worker")
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=impls[communication])
        strategy = tf.distribute.MultiWorkerMirroredStrategy(
            cluster_resolver=tf.distribute.cluster_resolver.TFConfigClusterResolver(),
            communication_options=options)
        return _nest_aware_reduce(strategy)
    try:  # tpu
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as err:
        raise ValueError(f"make_strategy: no TPU found (tpu={tpu!r}): {err}. Run on a Cloud "
                         "TPU VM, or pass the TPU name / grpc:// address") from None
    return tf.distribute.TPUStrategy(resolver)


def _nest_aware_reduce(strategy):
    """Workarounds for Keras 3 ``fit`` under ``MultiWorkerMirroredStrategy`` with several
    workers (tensorflow/tensorflow#72388), which only reduces single, non-scalar-axis values:

    - ``fit`` first calls ``strategy.reduce("MEAN", (x, y), axis=None)`` on a *tuple* of
      per-replica batches (symbolic build): reduce each leaf;
    - the step's logs (scalars) are reduced with ``axis=0``: "Invalid reduction dimension 0
      for input with 0 dimensions". A scalar is reduced across replicas (``axis=None``).
    Every worker runs the same reductions, so the collectives match."""
    reduce = strategy.reduce

    def rank(v):
        if isinstance(v, tf.distribute.DistributedValues):
            v = strategy.experimental_local_results(v)[0]
        return getattr(getattr(v, "shape", None), "rank", None)

    def leaf(reduce_op, v, axis):
        if v is None:
            return v
        if axis is not None and rank(v) == 0:
            axis = None
        return reduce(reduce_op, v, axis=axis)

    def nested_reduce(reduce_op, value, axis=None):
        return tf.nest.map_structure(lambda v: leaf(reduce_op, v, axis), value)

    strategy.reduce = nested_reduce
    return strategy


def _task(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return None, None, {}
    spec = resolver.cluster_spec().as_dict() if resolver.cluster_spec() else {}
    return resolver.task_type, resolver.task_id, spec


def is_chief(strategy=None):
    """True on the worker that writes files: task ``chief``, or ``worker`` 0 when the cluster
    has no chief, or any process without a cluster (single machine, TPU host)."""
    strategy = strategy or tf.distribute.get_strategy()
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return True
    task_type, task_id, spec = _task(strategy)
    if not task_type:
        return True
    if task_type == "chief":
        return True
    return task_type == "worker" and "chief" not in spec and int(task_id or 0) == 0


@contextlib.contextmanager
def worker_run_dir(run_dir, strategy=None):
    """Context manager yielding the directory this worker writes its run files into.

    The chief gets ``run_dir``. Another worker gets a fresh temporary directory holding a
    copy of ``run_dir/backup`` (when the chief left one, so ``BackupAndRestore`` resumes
    at the same epoch on every worker; needs ``run_dir`` on a shared file system) and of
    ``run_dir/recipe.json``; it is deleted on exit, also after an error.
    """
    if is_chief(strategy):
        yield run_dir
        return
    task_type, task_id, _ = _task(strategy or tf.distribute.get_strategy())
    tmp = tempfile.mkdtemp(prefix=f"keras_mld-{task_type}{task_id}-")
    try:
        backup = os.path.join(run_dir, "backup")
        if os.path.isdir(backup):
            shutil.copytree(backup, os.path.join(tmp, "backup"))
        if os.path.isfile(os.path.join(run_dir, "recipe.json")):
            shutil.copy2(os.path.join(run_dir, "recipe.json"), tmp)
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------- input sharding
def reads_files(dataset):
    """True when ``dataset``'s graph (functions included, e.g. ``interleave``) reads files
    through a tf.data reader, the sources ``AutoShardPolicy.FILE`` can split."""
    graph = tf.compat.v1.GraphDef()
    graph.ParseFromString(tf.raw_ops.DatasetToGraphV2(
        input_dataset=dataset._variant_tensor).numpy())  # pylint: disable=protected-access
    ops = {n.op for n in graph.node}
    for fn in graph.library.function:
        ops.update(n.op for n in fn.node_def)
    return any(op in ops for op in _READER_OPS)


def with_shard_policy(dataset, policy="auto"):
    """``dataset`` with an explicit ``experimental_distribute.auto_shard_policy``.

    ``auto`` picks ``file`` when :func:`reads_files` else ``data``; ``off`` leaves
    sharding to the caller (each worker must then feed different data itself).
    """
    if policy not in SHARD_POLICIES:
        raise ValueError(f"with_shard_policy: policy must be one of {SHARD_POLICIES}, "
                         f"got {policy!r}")
    if not isinstance(dataset, tf.data.Dataset):
        return dataset
    if policy == "auto":
        policy = "file" if reads_files(dataset) else "data"
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = {
        "file": tf.data.experimental.AutoShardPolicy.FILE,
        "data": tf.data.experimental.AutoShardPolicy.DATA,
        "off": tf.data.experimental.AutoShardPolicy.OFF}[policy]
    return dataset.with_options(options)


# ---------------------------------------------------------------- batch and learning rate
def per_replica_batch_size(global_batch_size, strategy=None):
    """``global_batch_size / num_replicas_in_sync``; ValueError unless it divides evenly."""
    strategy = strategy or tf.distribute.get_strategy()
    n = strategy.num_replicas_in_sync
    if isinstance(global_batch_size, bool) or not isinstance(global_batch_size, int) \
            or global_batch_size < 1 or global_batch_size % n:
        raise ValueError(f"global_batch_size must be an int >= 1 divisible by the "
                         f"{n} replicas in sync, got {global_batch_size!r}")
    return global_batch_size // n


def reference_batch_size(recipe):
    """The batch size the recipe's learning rate was tuned for: ``data.reference_batch_size``,
    else ``data.batch_size`` (``None`` when the recipe has neither)."""
    data = (recipe or {}).get("data", {}) or {}
    ref = data.get("reference_batch_size", data.get("batch_size"))
    return None if ref is None else int(ref)


def scale_learning_rate(lr, global_batch_size, reference_batch_size, rule="none"):
    """``lr`` scaled from ``reference_batch_size`` to ``global_batch_size``.

    ``none``: ``lr``; ``linear``: ``lr * B / B_ref``; ``sqrt``: ``lr * sqrt(B / B_ref)``.
    ``lr="auto"`` (range test) is returned unchanged.
    """
    if rule not in LR_SCALING:
        raise ValueError(f"lr_scaling must be one of {LR_SCALING}, got {rule!r}")
    if rule == "none" or lr == "auto":
        return lr
    for name, value in (("global_batch_size", global_batch_size),
                        ("reference_batch_size", reference_batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"scale_learning_rate: {name} must be an int >= 1, got {value!r}")
    ratio = global_batch_size / reference_batch_size
    return float(lr) * (ratio if rule == "linear" else math.sqrt(ratio))


# ---------------------------------------------------------------- batch normalisation
def _batchnorm_layers(model):
    return [layer for layer in model._flatten_layers(include_self=False)  # pylint: disable=protected-access
            if isinstance(layer, keras.layers.BatchNormalization)]


@contextlib.contextmanager
def synchronized_batchnorm(model):
    """Context manager: every ``keras.layers.BatchNormalization`` of ``model`` computes its
    training-time batch statistics over the *global* batch (all replicas of all workers:
    an all-reduce of the sums, Keras' ``synchronized=True`` code path), so a replicated run
    normalises, and updates its moving statistics, as one device on the same global batch
    would (up to float rounding: sum of squares minus squared mean instead of the
    two-pass variance). The layers' configs are untouched (a model saved inside still
    loads everywhere, JAX included); the original behaviour is back on exit."""
    layers = [layer for layer in _batchnorm_layers(model) if not layer.synchronized]

    def synced(layer):
        plain = layer._moments  # pylint: disable=protected-access

        def moments(inputs, mask):
            if mask is not None:
                return plain(inputs, mask)
            return keras.ops.moments(inputs, axes=layer._reduction_axes,  # pylint: disable=protected-access
                                     synchronized=True)
        return moments

    for layer in layers:
        layer._moments = synced(layer)  # pylint: disable=protected-access
    try:
        yield model
    finally:
        for layer in layers:
            del layer._moments  # pylint: disable=protected-access


# ---------------------------------------------------------------- training
def distributed_fit(model_fn, train_data, validation_data=None, recipe=None,
                    run_dir="runs/default", strategy=None, shard_policy="auto",
                    sync_batchnorm="auto", **fit_kwargs):
    """Builds ``model_fn()`` in ``strategy.scope()`` and trains it with
    :func:`keras_mld.training.fit` (compiled in the same scope).

    Datasets get an explicit shard policy (:func:`with_shard_policy`); files follow
    :func:`worker_run_dir`. Batch sizes of the datasets are global. ``sync_batchnorm``:
    ``"auto"`` (default) = :func:`synchronized_batchnorm` when the strategy has more
    than one replica (BatchNorm then sees the global batch, as on one device), True,
    or False (per-replica statistics; moving statistics then differ between workers).
    Returns ``(model, history)``.
    """
    from keras_mld.training.fit import fit

    strategy = strategy or tf.distribute.get_strategy()
    if strategy.num_replicas_in_sync > 1 and (recipe or {}).get("lr") == "auto":
        raise ValueError("distributed_fit: lr='auto' is not supported with several replicas; "
                         "run the range test on one device and put the value in the recipe")
    with strategy.scope():
        model = model_fn()
    if not isinstance(model, keras.Model):
        raise ValueError(f"distributed_fit: model_fn must return a keras.Model, got "
                         f"{type(model).__name__}")
    train_data = with_shard_policy(train_data, shard_policy)
    validation_data = with_shard_policy(validation_data, shard_policy)
    if sync_batchnorm not in ("auto", True, False):
        raise ValueError(f"distributed_fit: sync_batchnorm must be 'auto', True or False, "
                         f"got {sync_batchnorm!r}")
    if sync_batchnorm == "auto":
        sync_batchnorm = strategy.num_replicas_in_sync > 1
    sync = synchronized_batchnorm(model) if sync_batchnorm else contextlib.nullcontext()
    with worker_run_dir(run_dir, strategy) as directory, sync:
        history = fit(model, train_data, validation_data, recipe=recipe, run_dir=directory,
                      **fit_kwargs)
    return model, history
