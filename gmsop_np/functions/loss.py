"""Softmax cross-entropy (the classification loss) and the top-k error metric.

Derivation: derivations/04_softmax_cross_entropy.md, eqs. (13)-(14).

Convention: ``reduction="mean"`` (default) averages over the batch, like
PyTorch's ``cross_entropy``. The official GM-SOP release *sums* over the batch
and divides every gradient by B instead (see ``objective``); ``reduction="sum"`` gives
that sum when a caller wants it.
"""

from __future__ import annotations

from .._checks import check_index_range, check_int
from ..backend import default_xp, get_array_module, to_cpu
from ..core import ArrayFunction, Tensor, TensorLike, as_tensor

__all__ = ["softmax_cross_entropy", "objective", "topk_error", "label_rank"]


class SoftmaxCrossEntropy(ArrayFunction):
    """Cross-entropy of softmax(logits) against integer labels: (B, N), (B,) -> ().

    Forward:  $L = -\\frac{1}{B} \\sum_b \\log \\mathrm{softmax}(z_b)_{t_b}$
              (log-softmax with the row maximum subtracted).
    VJP:      $\\bar z = \\bar L \\, (\\mathrm{softmax}(z) - \\mathrm{onehot}(t)) / B$.
    See derivations/04_softmax_cross_entropy.md, eqs. (13)-(14).
    """

    def __init__(self, reduction):
        self.reduction = reduction

    def forward(self, logits, labels):
        xp = get_array_module(logits)
        B = logits.shape[0]
        shifted = logits - logits.max(axis=1, keepdims=True)
        exp_shifted = xp.exp(shifted)
        sum_exp = exp_shifted.sum(axis=1, keepdims=True)
        self.probs = exp_shifted / sum_exp  # softmax, for eq. (14)
        rows = xp.arange(B)
        log_p_label = shifted[rows, labels] - xp.log(sum_exp[:, 0])  # log-softmax at t_b
        loss = -log_p_label.sum()  # eq. (13)
        if self.reduction == "mean":
            loss = loss / B
        return xp.asarray(loss, dtype=logits.dtype)

    def backward(self, gloss):
        xp = get_array_module(gloss)
        labels = self.inputs[1].data
        B = self.probs.shape[0]
        g_logits = self.probs.copy()
        g_logits[xp.arange(B), labels] -= 1  # softmax - onehot
        scale = gloss / B if self.reduction == "mean" else gloss
        return g_logits * scale, None  # eq. (14); no label grad


def _check_labels(logits, labels, name):
    """Labels as an integer Tensor of shape (B,) with values in [0, N)."""
    if not isinstance(labels, Tensor):
        # keep integer lists as integers (Tensor(list) would make float32 data)
        labels = Tensor(labels if hasattr(labels, "dtype") else default_xp().asarray(labels))
    B, N = logits.shape
    if labels.dtype.kind not in "iu":
        raise TypeError(
            f"{name}: labels must be integers (class indices), got dtype {labels.dtype}; "
            "convert with labels.astype(int)"
        )
    if labels.shape != (B,):
        raise ValueError(f"{name}: labels must have shape ({B},) to match logits {logits.shape}, got {labels.shape}")
    check_index_range(
        labels.data, N, f"{name}: label", f"there are {N} classes; check the dataset and the classifier's width"
    )
    return labels


def softmax_cross_entropy(logits: TensorLike, labels: TensorLike, reduction: str = "mean") -> Tensor:
    """Cross-entropy loss of ``softmax(logits)`` against integer class labels.

    Parameters
    ----------
    logits : Tensor (B, N) -- unnormalised class scores
    labels : int array or Tensor (B,) -- class indices in [0, N)
    reduction : "mean" (default, average over the batch) or "sum"

    Returns a scalar Tensor (shape ()).
    """
    logits = as_tensor(logits)
    if logits.ndim != 2:
        raise ValueError(f"softmax_cross_entropy expects logits of shape (B, N), got {logits.shape}")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"softmax_cross_entropy: reduction must be 'mean' or 'sum', got {reduction!r}")
    labels = _check_labels(logits, labels, "softmax_cross_entropy")
    return SoftmaxCrossEntropy(reduction)(logits, labels)


def objective(logits: TensorLike, labels: TensorLike, balance_loss: Tensor | None = None) -> Tensor:
    """The training objective of every head: ``CE_mean(logits, labels) + balance_loss / B``.

    ``balance_loss`` is a gated head's unscaled L_B (paper Eq. 4, ``model.balance_loss``),
    ``None`` for heads without a gate. The official release sums the cross-entropy
    over the batch and divides every gradient by B; against a *mean* cross-entropy
    the same gradients come from adding L_B / B (derivations/09_balance_loss.md, eq. (9)).

    >>> import numpy as np
    >>> round(objective(np.zeros((2, 3)), [0, 2]).item(), 4)  # uniform logits: log 3
    1.0986
    """
    loss = softmax_cross_entropy(logits, labels)
    if balance_loss is None:
        return loss
    return loss + balance_loss * (1.0 / as_tensor(logits).shape[0])


def label_rank(logits, labels):
    """How many classes rank above the label, per sample: an integer array (B,) on the logits' device.

    Rank 0 is a correct top-1 prediction, ``rank < k`` a correct top-k one. Ties are
    broken by index, as a stable sort would: the rank is the number of logits larger
    than the label's, plus the number of equal logits at a smaller index. Nothing is
    read back to the host (a trainer sums ``rank >= k`` on the device; ``topk_error``
    reads the mean).

    >>> import numpy as np
    >>> label_rank(np.array([[0.1, 0.7, 0.2], [0.5, 0.5, 0.0]]), [2, 1]).tolist()
    [1, 1]
    """
    return _label_rank(as_tensor(logits), labels, "label_rank")


def _label_rank(logits, labels, name):
    if logits.ndim != 2:
        raise ValueError(f"{name} expects logits of shape (B, N), got {logits.shape}")
    labels = _check_labels(logits, labels, name)
    xp = get_array_module(logits)
    z, t = logits.data, labels.data
    B, N = z.shape
    label_logit = z[xp.arange(B), t][:, None]
    before = xp.arange(N)[None, :] < t[:, None]  # index-based tie break
    return (z > label_logit).sum(axis=1) + ((z == label_logit) & before).sum(axis=1)


def topk_error(logits: TensorLike, labels: TensorLike, k: int = 1) -> float:
    """Fraction of samples whose label is NOT among the k largest logits (a float, no gradient).

    ``topk_error(logits, labels, 1)`` is the top-1 error, ``k=5`` the top-5 error.
    Ties are broken deterministically by index (``label_rank``), so all-equal logits
    are *not* counted as correct for every class at once.
    """
    logits = as_tensor(logits)
    if logits.ndim == 2:
        check_int(k, "topk_error: k", 1, logits.shape[1])
    return float(to_cpu((_label_rank(logits, labels, "topk_error") >= k).mean()))
