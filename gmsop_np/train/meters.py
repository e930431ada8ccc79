"""Running sums of a pass over the data, kept on the device and read back rarely.

Reading a number from a GPU is a device->host synchronisation: the CPU waits until
every queued kernel has finished, and the pipeline drains. A trainer that read the
loss and the errors after every step would stall the GPU every step. ``DeviceSums``
adds each batch's figures into one small float64 array *on the device* (a handful
of kernel launches, no synchronisation) and ``read()`` copies that array to the host
in one transfer: the trainer reads it every ``--log-every`` steps and at the end of
an epoch, evaluation once per pass.

The sums are those the host used to keep, in the same order and precision
(float64: ``loss`` and ``balance`` times the batch size, then added), so the
epoch means are the same numbers as when they were read after every step.
"""

from __future__ import annotations

import math

import numpy as np

from ..backend import get_array_module, to_cpu
from ..functions.loss import label_rank

__all__ = ["DeviceSums", "SUM_FIELDS", "all_finite"]

#: What ``DeviceSums`` adds up: loss x B, wrong top-1 and top-k predictions, balance loss x B.
SUM_FIELDS = ("loss_sum", "top1_sum", "top5_sum", "balance_sum")


class DeviceSums:
    """Sums over batches on the logits' device: ``add`` per batch (no sync), ``read`` (one sync).

    start : sums to continue from (a dict over ``SUM_FIELDS``; a resumed epoch), or None
    xp : the array module of the batches (numpy, or cupy)
    """

    def __init__(self, xp, start: dict | None = None):
        values = [float((start or {}).get(name, 0.0)) for name in SUM_FIELDS]
        # zeros are made on the device; only a resumed epoch's sums are copied there (once)
        self.sums = xp.asarray(np.array(values)) if any(values) else xp.zeros(len(SUM_FIELDS), dtype=xp.float64)

    def add(self, loss, logits, labels, balance=None) -> None:
        """Add one batch: ``loss`` (a scalar Tensor, the batch mean), its ``logits`` (B, N) and
        ``labels`` (B,), and the unscaled ``balance`` loss of a gated head (or None)."""
        xp = get_array_module(logits)
        b = logits.shape[0]
        rank = label_rank(logits, labels)  # (B,) on the device
        top5 = min(5, logits.shape[1])
        values = [
            loss.data.astype(xp.float64) * b,
            (rank >= 1).sum(),
            (rank >= top5).sum(),
            xp.zeros((), dtype=xp.float64) if balance is None else balance.data.astype(xp.float64) * b,
        ]
        self.sums += xp.stack(values)  # float64: the counts are promoted

    def read(self) -> dict:
        """The sums on the host: one device->host synchronisation."""
        return dict(zip(SUM_FIELDS, (float(v) for v in to_cpu(self.sums))))


def all_finite(values: dict) -> bool:
    """True when every value read back is finite (a NaN or Inf in a sum: a step diverged)."""
    return all(math.isfinite(v) for v in values.values())
