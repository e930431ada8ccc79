"""Upper-triangular vectorisation: the last step of SR-SOP.

A covariance square root C is symmetric, so its d(d+1)/2 entries on and above
the diagonal hold all its information. ``triu_vec`` keeps exactly those, in
row-major order (C_00, C_01, ..., C_0,d-1, C_11, C_12, ...), with no √2
scaling of the off-diagonal entries (SPEC §1): 8256 values for d = 128.

Derivation: derivations/05_covariance_pooling.md, eqs. (5)-(6).
"""

from __future__ import annotations

from ..backend import get_array_module
from ..core import Function, as_tensor

__all__ = ["triu_vec"]


def triu_indices(xp, d):
    """(rows, cols) of the upper triangle incl. the diagonal of a d×d matrix, row-major order."""
    return xp.triu_indices(d)


class TriuVec(Function):
    """(B, d, d) -> (B, d(d+1)/2): the entries A_ij with i <= j, row-major.

    Forward:  $v_{b,k} = A_{b, i_k j_k}$ for the k-th pair $(i_k \\le j_k)$ in row-major order.
    VJP:      $\\bar A = $ zeros with $\\bar A_{b, i_k j_k} = \\bar v_{b,k}$ (lower triangle gets 0).
    See derivations/05_covariance_pooling.md, eq. (5) (forward) and eq. (6) (VJP).

    The backward is the Function ``TriuVecAdjoint``, whose own backward is
    ``triu_vec`` again, so second derivatives work.
    """

    def forward(self, a):
        xp = get_array_module(a)
        self.d = a.shape[-1]
        rows, cols = triu_indices(xp, self.d)
        return a[:, rows, cols]  # eq. (5): a gather, no copy of the rest

    def backward(self, gv):
        return TriuVecAdjoint(self.d)(gv)  # eq. (6)


class TriuVecAdjoint(Function):
    """(B, d(d+1)/2) -> (B, d, d): scatter a vector into the upper triangle of zeros.

    The adjoint of ``TriuVec`` (derivations/05_covariance_pooling.md, eq. (6));
    its VJP is ``triu_vec`` (a linear map's adjoint's adjoint is the map).
    """

    def __init__(self, d):
        self.d = d

    def forward(self, v):
        xp = get_array_module(v)
        rows, cols = triu_indices(xp, self.d)
        a = xp.zeros((v.shape[0], self.d, self.d), dtype=v.dtype)
        a[:, rows, cols] = v  # each (i, j) appears once: plain assignment
        return a

    def backward(self, ga):
        return TriuVec()(ga)


def triu_vec(a):
    """Row-major upper triangle (incl. diagonal) of each matrix: (B, d, d) -> (B, d(d+1)/2)."""
    from .matrix_sqrt import check_square_batch  # noqa: PLC0415  (shared input validation)

    a = as_tensor(a)
    check_square_batch(a, "triu_vec", check_finite=False)
    return TriuVec()(a)
