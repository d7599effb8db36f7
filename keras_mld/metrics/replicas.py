"""Gathering a metric's inputs across ``tf.distribute`` replicas (TensorFlow only).

:class:`~keras_mld.metrics.MeanAveragePrecision` is not a sum of per-sample terms: its
state is the list of (score, label) rows, and the mAP of a replicated run is the mAP of
the rows of *every* replica of every worker. Summing the replicas' buffers (what a Keras
metric variable does by default when read across replicas) mixes the rows of different
images. Instead each replica all-gathers its batch before storing it (in replica-id
order, which is the order of the global batch), so every replica holds the same buffer
as a single device would, and the variables are read from the first replica.
"""
import tensorflow as tf

__all__ = ["all_gather_replicas"]


def all_gather_replicas(*tensors):
    """``tensors`` concatenated along axis 0 over all replicas in sync (all workers), in
    replica order; unchanged outside a replica context or with one replica. Per-replica
    batches may differ in size (the last, partial batch)."""
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync == 1:
        return tensors
    return tuple(ctx.all_gather(t, axis=0) for t in tensors)
