"""The data order of a seeded pipeline under ``tf.distribute`` and on resume.

A seeded pipeline that reshuffles every iteration (``make_dataset(training=True,
seed=...)``) draws its shuffle and augmentation seeds per *iterator*, so anything that
opens an extra iterator shifts every later epoch's order. Two places in Keras 3.15 do:
the symbolic build of a model under a strategy (:func:`symbolic_build_from_spec` removes
it) and a fresh process resuming a run (:func:`replay_data_order` opens the iterators the
finished epochs opened). Both rely on Keras internals named in their docstrings
(``keras/src/backend/tensorflow/trainer.py``, ``keras/src/trainers/epoch_iterator.py``).
"""
import contextlib
import os

import tensorflow as tf

from keras_mld.untrusted import MAX_STATE_BYTES, read_json

__all__ = ["replay_data_order", "symbolic_build_from_spec"]

_ITERATORS_PER_EPOCH = 2


def replay_data_order(dataset, backup_dir):
    """Before a resumed ``fit``: creates (and drops) one iterator of ``dataset`` per epoch
    that ``BackupAndRestore`` will skip (``backup_dir/training_metadata.json``), so that
    the resumed epochs read the data in the order an uninterrupted run reads them. A
    seeded pipeline that reshuffles every iteration (``make_dataset(training=True,
    seed=...)``) draws its shuffle and augmentation seeds per iterator, and a fresh process
    would start again at the first epoch's order. No element is read (no decoding). Done
    before Keras distributes the dataset: the distributed copy starts from that state."""
    if not isinstance(dataset, tf.data.Dataset):
        return 0
    path = os.path.join(backup_dir, "training_metadata.json")
    if not os.path.exists(path):
        return 0
    where = f"fit: resume: {path!r}"  # untrusted: damaged -> ValueError naming it
    state = read_json(path, where, max_bytes=MAX_STATE_BYTES)
    epoch = state.get("epoch") if isinstance(state, dict) else None
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch <= 1_000_000:
        raise ValueError(f"{where}: expected an object with an integer 'epoch' in "
                         f"[0, 1000000], got {epoch!r} (delete the run folder's backup/ to "
                         "start afresh)")
    # Keras' epoch iterator (keras/src/trainers/epoch_iterator.py, ``_enumerate_iterator``,
    # ``steps_per_epoch=None``) creates two iterators per epoch: one when the epoch starts
    # and one, unused, when it has seen all its batches
    for _ in range(epoch * _ITERATORS_PER_EPOCH):
        iter(dataset)
    return epoch


@contextlib.contextmanager
def symbolic_build_from_spec(model):
    """Context manager: ``model`` builds itself from its data's element spec, not a batch.

    Keras 3's TensorFlow trainer, under a ``tf.distribute`` strategy (a model built in
    ``strategy.scope()``), starts every ``fit`` / ``evaluate`` by building the model
    symbolically from the first batch of a *fresh iterator* of the data
    (``_maybe_symbolic_build`` in ``keras/src/backend/tensorflow/trainer.py``), which it then
    throws away; on one device without a strategy it does not. A seeded pipeline that
    reshuffles every iteration (``make_dataset(training=True, seed=...)``) draws its next
    shuffle seeds for that extra iterator, so every epoch of a replicated run saw the order
    of the *next* epoch of the single-device run (measured: issue 22). Inside this
    context the build uses the data's ``element_spec`` only (no iterator, no decoding).
    """
    original = getattr(model, "_maybe_symbolic_build", None)
    if original is None or getattr(model, "_distribute_strategy", None) is None:
        yield model
        return

    def from_spec(iterator=None, data_batch=None):
        if data_batch is None and iterator is not None:
            adapter = getattr(iterator, "data_adapter", None)
            dataset = adapter.get_tf_dataset() if adapter is not None else None
            if isinstance(dataset, tf.data.Dataset):
                data_batch = tf.nest.map_structure(
                    lambda spec: tf.TensorSpec([None] + list(spec.shape[1:]), spec.dtype),
                    dataset.element_spec)
                return original(data_batch=data_batch)
        return original(iterator=iterator, data_batch=data_batch)

    model._maybe_symbolic_build = from_spec  # pylint: disable=protected-access
    try:
        yield model
    finally:
        del model._maybe_symbolic_build
