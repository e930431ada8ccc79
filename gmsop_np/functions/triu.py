"""Upper-triangular vectorisation: the last step of SR-SOP.

A covariance square root C is symmetric, so its d(d+1)/2 entries on and above
the diagonal hold all its information. ``triu_vec`` keeps exactly those, in
row-major order (C_00, C_01, ..., C_0,d-1, C_11, C_12, ...), with no √2
scaling of the off-diagonal entries (as the paper's release): 8256 values for d = 128.

It is a gather (``getitem``) whose indices never repeat, so its VJP is the
adjoint gather written into zeros by plain assignment: the lower triangle gets
gradient 0 (derivations/05_covariance_pooling.md, eqs. (5)-(6)).
"""

from __future__ import annotations

import functools

import numpy as np

from .._checks import check_square_batch
from ..backend import get_array_module
from ..core import Tensor, as_tensor
from .basic import getitem

__all__ = ["triu_vec"]


def triu_vec(a) -> Tensor:
    """Row-major upper triangle (incl. diagonal) of each matrix: (B, d, d) -> (B, d(d+1)/2).

    $v_{b,k} = A_{b, i_k j_k}$ for the k-th pair $i_k \\le j_k$ in row-major order
    (derivations/05_covariance_pooling.md, eq. (5)); VJP eq. (6).

    >>> import numpy as np
    >>> triu_vec(np.arange(9.0).reshape(1, 3, 3)).data
    array([[0., 1., 2., 4., 5., 8.]])
    """
    a = as_tensor(a)
    check_square_batch(a, "triu_vec")
    rows, cols = upper_triangle_indices(get_array_module(a), a.shape[-1])
    return getitem(a, (slice(None), rows, cols), unique=True)


@functools.cache
def upper_triangle_indices(xp, d: int):
    """``(rows, cols)`` of the row-major upper triangle of a d x d matrix, as arrays of backend ``xp``.

    Made once per (backend, d) and reused: on a GPU, ``cupy.triu_indices`` reads two boolean
    masks back (two device synchronisations per call), and a copy of NumPy's indices costs two
    host -> device copies -- once, instead of at every forward. The arrays are never written to.
    """
    return tuple(xp.asarray(i) for i in np.triu_indices(d))
