"""Sparse dispatch / combine for the gated mixture (paper Eq. 1 restricted to the Top-K).

Each component runs only on the samples that selected it. With B samples and K
selected components per sample there are B*K (sample, slot) pairs, so the
components together see B*K rows instead of B*N.

The scheme (derivations/10_dispatch.md):

1. ``make_dispatch_plan(indices, N)``: flatten the (sample, slot) pairs in the
   order p = b*K + k, stable-sort them by component id -> permutation ``order``
   and its inverse; count the rows of each component (contiguous slices).
2. ``dispatch(x, plan)``: repeat every sample K times, then permute rows into
   component order. The backward undoes both: gather by the *inverse*
   permutation and sum over the K slots -- no scatter-add, no races,
   deterministic on every backend.
3. run component i on rows ``plan.slices[i]`` (``sparse_mixture`` does this and
   then runs an optional parameter-free tail once on all B*K rows).
4. ``combine(y, weights, plan)``: undo the permutation, weight each slot by
   w[b, idx[b, k]], sum over the K slots.

Dispatch is driven by the selected *indices*, never by ``weights > 0``: a
weight that underflows to 0 must not silently drop a component.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._checks import check_index_range
from ..backend import get_array_module, to_cpu
from ..core import Function, Tensor, TensorLike, as_tensor
from . import basic

__all__ = [
    "DispatchPlan",
    "make_dispatch_plan",
    "permute_rows",
    "dispatch",
    "combine",
    "select_slot_weights",
    "split_rows",
    "sparse_mixture",
    "combine_slots",
    "route_matrix",
    "routed_mixture",
]


@dataclass(frozen=True)
class DispatchPlan:
    """Where every (sample, slot) pair goes.

    indices        (B, K) int   selected component of each slot (from ``topk_softmax``)
    order          (B*K,) int   stable argsort of ``indices.ravel()``: row r of the
                                dispatched batch is pair ``order[r]`` (eq. (2))
    inverse        (B*K,) int   inverse permutation: pair p sits at row ``inverse[p]``
    device_counts  (N,) int     rows per component (samples it received), on the data's backend
    offsets        (N+1,) int   on the HOST: component i owns rows offsets[i]:offsets[i+1]

    ``offsets`` is the one value of a training step that must be read from the
    device: Python needs the slice bounds to run each component on its rows.
    """

    indices: object
    order: object
    inverse: object
    device_counts: object
    offsets: np.ndarray

    @property
    def batch_size(self) -> int:
        return int(self.indices.shape[0])

    @property
    def k(self) -> int:
        return int(self.indices.shape[1])

    @property
    def num_components(self) -> int:
        return len(self.offsets) - 1

    @property
    def counts(self) -> np.ndarray:
        """(N,) host int64: rows per component."""
        return np.diff(self.offsets)

    def slices(self):
        """(component, slice) for every component that received at least one row."""
        bounds = self.offsets.tolist()
        return [(i, slice(bounds[i], bounds[i + 1])) for i in range(self.num_components) if bounds[i + 1] > bounds[i]]


def make_dispatch_plan(indices, num_components: int) -> DispatchPlan:
    """Build the permutation that groups the B*K (sample, slot) pairs by component (eq. (2)).

    ``indices``: (B, K) integer array or Tensor, each row K distinct ids in [0, N).
    """
    idx = indices.data if isinstance(indices, Tensor) else indices
    xp = get_array_module(idx)
    if idx.ndim != 2 or idx.dtype.kind not in "iu":
        raise ValueError(f"indices must be a (B, K) integer array, got shape {tuple(idx.shape)} and dtype {idx.dtype}")
    check_index_range(idx, num_components, "make_dispatch_plan: component index")
    flat = idx.reshape(-1)
    order = xp.argsort(flat, kind="stable")  # rows of one component stay in sample order
    inverse = xp.empty_like(order)
    inverse[order] = xp.arange(order.shape[0], dtype=order.dtype)
    # Component i owns the rows of the sorted ids that equal i: their bounds by binary search.
    device_offsets = xp.searchsorted(flat[order], xp.arange(num_components + 1))
    offsets = to_cpu(device_offsets).astype(np.int64)  # the one device -> host read
    return DispatchPlan(idx, order, inverse, device_offsets[1:] - device_offsets[:-1], offsets)


# ----- permutation of rows ----------------------------------------------------------------------
class PermuteRows(Function):
    """y = x[order] for a permutation ``order`` of axis 0; VJP: gx = gy[inverse].

    The adjoint of a permutation matrix is its inverse, so the backward is a
    gather again, not a scatter-add (derivations/10_dispatch.md, eq. (4)).
    """

    def __init__(self, order, inverse):
        self.order, self.inverse = order, inverse

    def forward(self, x):
        return x[self.order]

    def backward(self, gy):
        return PermuteRows(self.inverse, self.order)(gy)


def permute_rows(x: TensorLike, order, inverse) -> Tensor:
    """Rows of ``x`` in the order ``order`` (``inverse`` must be its inverse permutation)."""
    x = as_tensor(x)
    if x.shape[0] != order.shape[0]:
        raise ValueError(f"permute_rows: x has {x.shape[0]} rows but the permutation has {order.shape[0]}")
    return PermuteRows(order, inverse)(x)


# ----- dispatch ----------------------------------------------------------------------------------
def _repeat_slots(x, k):
    """(B, ...) -> (B*K, ...): row b*K + k is a copy of sample b (eq. (3)).

    Built from reshape + broadcast_to, whose adjoint sums the K copies back (eq. (4)).
    """
    b, rest = x.shape[0], tuple(x.shape[1:])
    x = basic.reshape(x, (b, 1) + rest)
    x = basic.broadcast_to(x, (b, k) + rest)
    return basic.reshape(x, (b * k,) + rest)


def dispatch(x: TensorLike, plan: DispatchPlan) -> Tensor:
    """Gather the inputs of every component: (B, ...) -> (B*K, ...) in component order.

    Row r holds sample ``order[r] // K``; component i owns rows ``plan.slices()``.
    $$\\tilde X_r = X_{s(\\pi_r)}$$ (derivations/10_dispatch.md, eq. (3)); the VJP gathers by
    the inverse permutation and sums over the K slots (eq. (4)).
    """
    x = as_tensor(x)
    if x.shape[0] != plan.batch_size:
        raise ValueError(
            f"dispatch: x has batch size {x.shape[0]} but the gate routed "
            f"{plan.batch_size} samples; feed the gate and the components the same batch"
        )
    return permute_rows(_repeat_slots(x, plan.k), plan.order, plan.inverse)


# ----- split into the components' slices ------------------------------------------------------
class SplitRows(Function):
    """Cut axis 0 into consecutive pieces of the given sizes; VJP: concatenate the piece gradients.

    derivations/10_dispatch.md, eq. (5): component i reads the rows [o_i, o_{i+1}).

    (Slicing each piece with ``x[a:b]`` would also work, but every slice's
    backward allocates a full-size zero gradient: N of them for N components.)
    """

    def __init__(self, sizes):
        self.sizes = tuple(sizes)

    def forward(self, x):
        bounds = [0]
        for size in self.sizes:
            bounds.append(bounds[-1] + size)
        return tuple(x[a:b] for a, b in zip(bounds[:-1], bounds[1:]))

    def backward(self, *gys):
        return gys[0] if len(gys) == 1 else basic.concatenate(gys, axis=0)


def split_rows(x: TensorLike, sizes) -> tuple:
    """A tuple of Tensors: consecutive row blocks of ``x`` with the given sizes (summing to len(x))."""
    x = as_tensor(x)
    if sum(sizes) != x.shape[0] or any(s <= 0 for s in sizes):
        raise ValueError(f"split_rows: sizes {list(sizes)} must be positive and sum to {x.shape[0]}")
    pieces = SplitRows(sizes)(x)
    return pieces if isinstance(pieces, tuple) else (pieces,)


# ----- combine -----------------------------------------------------------------------------------
def select_slot_weights(weights: TensorLike, indices: TensorLike) -> Tensor:
    """The weights of the selected components, slot by slot: (B, N), (B, K) -> (B, K).

    $\\omega_{b,k} = w_{b, i_{bk}}$: a gather whose indices never repeat (the K ids of a
    row are distinct), so its VJP writes $\\bar\\omega$ into zeros by plain assignment --
    no accumulation, no races (derivations/10_dispatch.md, eq. (7)).
    """
    weights = as_tensor(weights)
    idx = indices.data if isinstance(indices, Tensor) else indices
    rows = get_array_module(idx).arange(weights.shape[0])[:, None]
    return basic.getitem(weights, (rows, idx), unique=True)


def combine(y: TensorLike, weights: TensorLike, plan: DispatchPlan) -> Tensor:
    """Weighted sum of the K component outputs of each sample: (B*K, ...) -> (B, ...).

    $$y_b = \\sum_k w_{b, i_{bk}} \\tilde Y_{\\pi^{-1}(bK + k)}$$ (derivations/10_dispatch.md, eq. (6)).
    ``y`` is in component order (as produced from ``dispatch``); ``weights`` (B, N).
    """
    y, weights = as_tensor(y), as_tensor(weights)
    b, k = plan.batch_size, plan.k
    if y.shape[0] != b * k:
        raise ValueError(f"combine: expected {b * k} rows (B*K = {b}*{k}), got {y.shape[0]}")
    if weights.shape[0] != b:
        raise ValueError(
            f"combine: weights have batch size {weights.shape[0]} but the plan routes {b} "
            "samples; feed the gate and the components the same batch"
        )
    return combine_slots(permute_rows(y, plan.inverse, plan.order), weights, plan.indices)  # undo the sort


def combine_slots(y: TensorLike, weights: TensorLike, indices: TensorLike) -> Tensor:
    """Weighted sum over the K slots of rows in *slot order* (row b*K + k = slot k of sample b):
    (B*K, ...), (B, N), (B, K) -> (B, ...).

    $$y_b = \\sum_k \\omega_{b,k} Z_{b,k}$$, $\\omega_{b,k} = w_{b, i_{bk}}$ (derivations/10_dispatch.md, eq. (6)).
    """
    y = as_tensor(y)
    b, k = indices.shape
    rest = tuple(y.shape[1:])
    slots = basic.reshape(y, (b, k) + rest)
    ws = basic.reshape(select_slot_weights(weights, indices), (b, k) + (1,) * len(rest))
    return basic.sum(slots * ws, axis=1)


# ----- the routed mixture: every slot through its component in one batched call ---------------------
def route_matrix(indices, num_components: int, dtype):
    """The one-hot routing matrix E (B*K, N) of the (sample, slot) pairs in slot order, and its
    column sums (N,) int64 = rows per component, both on the indices' backend.

    $E_{p,i} = 1$ if pair $p = bK + k$ selected component $i$ (derivations/10_dispatch.md, eq. (10)).
    Built with a comparison, not ``bincount`` (which reads values back from a GPU).
    """
    idx = indices.data if isinstance(indices, Tensor) else indices
    xp = get_array_module(idx)
    hits = idx.reshape(-1, 1) == xp.arange(num_components)
    return hits.astype(dtype), hits.sum(axis=0)


def routed_mixture(x: TensorLike, weights: TensorLike, indices: TensorLike, bank, tail=None) -> Tensor:
    """y[b] = sum_k w[b, i_bk] * tail(M_{i_bk}(x[b])) with every (sample, slot) row run through its
    component in one batched call of ``bank`` (derivations/10_dispatch.md, eqs. (10)-(13)).

    Parameters
    ----------
    x : Tensor (B, ...); weights : Tensor (B, N); indices : (B, K) integer Tensor/array (``topk_softmax``).
    bank : callable ``bank(rows, route)`` -> rows: runs component i on row p where ``route[p, i] = 1``
        (``route`` the (B*K, N) one-hot matrix of ``route_matrix``), e.g. ``nn.ComponentBank``.
    tail : optional parameter-free callable run once on all B*K rows (as in ``sparse_mixture``).

    Returns ``(y, counts)``: the (B, D) mixture and the samples each component received ((N,) int64
    on x's backend). Unlike ``sparse_mixture`` nothing is sorted or sliced, so nothing is read
    from the device.
    """
    x, weights = as_tensor(x), as_tensor(weights)
    idx = indices.data if isinstance(indices, Tensor) else indices
    if weights.ndim != 2 or idx.ndim != 2 or x.shape[0] != weights.shape[0] or idx.shape[0] != x.shape[0]:
        raise ValueError(
            f"routed_mixture: x {tuple(x.shape)}, weights {tuple(weights.shape)} (B, N) and indices "
            f"{tuple(idx.shape)} (B, K) must describe the same batch; feed the gate and the components the same batch"
        )
    route, counts = route_matrix(idx, weights.shape[1], x.dtype)
    rows = bank(_repeat_slots(x, idx.shape[1]), route)  # eq. (11): row bK + k holds x_b
    if tail is not None:
        rows = tail(rows)
    return combine_slots(rows, weights, idx), counts  # eq. (13)


# ----- the whole sparse mixture ------------------------------------------------------------------
def sparse_mixture(x: TensorLike, weights: TensorLike, indices: TensorLike, components, tail=None) -> tuple:
    """y[b] = sum_k w[b, i_bk] * tail(M_{i_bk}(x[b])) with each M_i run only on its own samples.

    Parameters
    ----------
    x : Tensor (B, ...) -- the input every component reads (e.g. the feature map).
    weights : Tensor (B, N) -- Top-K weights, zero off the selected components.
    indices : (B, K) integer Tensor/array -- the selected components (``topk_softmax``).
    components : list of N callables, Tensor (rows, ...) -> Tensor (rows, ...).
        They must treat rows independently (no batch statistics), otherwise the
        sparse result differs from Eq. 1.
    tail : optional parameter-free callable run ONCE on all B*K component outputs
        (e.g. covariance -> Newton-Schulz -> triu of SR-SOP), so that expensive
        stage is one batched call instead of N small ones.

    Returns ``(y, plan)``: the (B, D) mixture and the ``DispatchPlan`` (``plan.counts``
    = samples received by each component).
    """
    x, weights = as_tensor(x), as_tensor(weights)
    if weights.ndim != 2:
        raise ValueError(f"weights must be (B, N), got shape {tuple(weights.shape)}")
    if x.shape[0] != weights.shape[0]:
        raise ValueError(
            f"the gate produced weights for {weights.shape[0]} samples but the components "
            f"got {x.shape[0]}; feed the gate and the components the same batch"
        )
    n = weights.shape[1]
    if len(components) != n:
        raise ValueError(f"{len(components)} components given for N = {n} gate weights")
    plan = make_dispatch_plan(indices, n)
    if plan.batch_size != x.shape[0]:
        raise ValueError(f"indices route {plan.batch_size} samples but x has {x.shape[0]}")
    xs = dispatch(x, plan)
    used = plan.slices()
    inputs = split_rows(xs, [rows.stop - rows.start for _, rows in used])
    pieces = [components[i](xi) for (i, _), xi in zip(used, inputs)]  # eq. (5): contiguous slices
    ys = pieces[0] if len(pieces) == 1 else basic.concatenate(pieces, axis=0)
    if tail is not None:
        ys = tail(ys)
    return combine(ys, weights, plan), plan
