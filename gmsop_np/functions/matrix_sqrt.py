"""Matrix square roots of covariance matrices: Newton–Schulz (iSQRT-COV) and eigh.

``sqrtm_newton_schulz`` is what SR-SOP uses in training (paper Eq. 9, the
iSQRT-COV algorithm): a fixed number of coupled Newton–Schulz steps, made of
matrix products only, after normalising the input by its trace. With 3–5
steps it is NOT the exact square root (the relative error is 0.3–0.6 for
d = 128, see the table in derivations/06_newton_schulz.md); that is intended.

``sqrtm_eig`` is the exact square root of a symmetric positive semi-definite
matrix through its eigendecomposition; it serves as the reference.

Both work on batches (B, d, d) with batched matmul / eigh (no loop over B, except
eigh on a GPU for d > 32: ``batched_eigh``), keep the input's dtype, and have
hand-written (kernel-style) backwards.

Derivations: derivations/06_newton_schulz.md and derivations/07_eig_sqrt.md.
"""

from __future__ import annotations

import numpy as np

from .._checks import check_finite, check_int, check_nonnegative_trace, check_number, check_square_batch
from ..backend import get_array_module
from ..core import ArrayFunction, Tensor, TensorLike, as_tensor
from . import basic, parallel

__all__ = ["sqrtm_newton_schulz", "sqrtm_newton_schulz_unrolled", "sqrtm_eig", "DEFAULT_TRACE_EPS"]

#: ε added to the trace in ``sqrtm_newton_schulz`` (t = tr Σ + ε). It only matters
#: when a covariance is exactly zero (an all-zero feature map after ReLU): then
#: the result is 0 instead of 0/0 = NaN. For any real covariance (trace ≳ 1e-3)
#: it changes nothing at float32 precision.
DEFAULT_TRACE_EPS = 1e-8


def _mT(a):
    """Transpose of every matrix in a batch (a view)."""
    return a.swapaxes(-1, -2)


def _batch_trace(xp, a):
    """(B, d, d) -> (B,): the trace of each matrix."""
    return xp.trace(a, axis1=-2, axis2=-1)


def _inner(a, b):
    """(B, d, d), (B, d, d) -> (B, 1, 1): the Frobenius inner product ⟨a, b⟩ per matrix."""
    return (a * b).sum(axis=(-2, -1), keepdims=True)


# ----- Newton–Schulz ----------------------------------------------------------------------------
def coupled_newton_schulz(a, num_iters, matmul, half, three_eye):
    """The N coupled Newton–Schulz steps from Y_0 = A, Z_0 = I: derivations/06_newton_schulz.md, eqs. (2)-(5).

    One loop for both users: ``NewtonSchulzSqrt.forward`` runs it on arrays (``matmul=parallel.matmul``:
    ``xp.matmul`` with the stack split over the CPU threads, the same products)
    and ``sqrtm_newton_schulz_unrolled`` on Tensors (``matmul=F.matmul``), so the two are one algorithm.
    ``half`` and ``three_eye`` are 1/2 and 3I in the caller's type and dtype.

    Returns the lists ``ys, zs, ts`` with ``ys[k]`` = Y_k (k = 0..N, so ``ys[N]`` = P),
    ``zs[k]`` = Z_k and ``ts[k]`` = T_k. Matrices that are never formed are ``None``: Z_0 = I
    (its products are skipped, eq. (3)), Z_N (nothing uses it, eq. (4)) and T_0 (no such matrix).
    """
    ys, zs, ts = [a], [None], [None]  # Y_0 = A, Z_0 = I
    for k in range(1, num_iters + 1):
        first, last = k == 1, k == num_iters
        zy = ys[0] if first else matmul(zs[k - 1], ys[k - 1])  # Z_{k-1} Y_{k-1}; Z_0 Y_0 = A (eq. (3))
        t_k = half * (three_eye - zy)  # eq. (2): T_k = (3I - Z_{k-1} Y_{k-1}) / 2
        ys.append(matmul(ys[k - 1], t_k))  # eq. (2): Y_k = Y_{k-1} T_k
        if last:
            z_k = None  # Z_N is never used, so it is not formed (eq. (4))
        elif first:
            z_k = t_k  # Z_1 = T_1 Z_0 = T_1, no product with I (eq. (3))
        else:
            z_k = matmul(t_k, zs[k - 1])  # eq. (2): Z_k = T_k Z_{k-1}
        zs.append(z_k)
        ts.append(t_k)
    return ys, zs, ts


class NewtonSchulzSqrt(ArrayFunction):
    """Approximate square root by the coupled Newton–Schulz iteration: (B, d, d) -> (B, d, d).

    Forward, derivations/06_newton_schulz.md, eqs. (1)-(6) (the iSQRT-COV algorithm):
      eq. (1)  pre-normalisation  $t = \\mathrm{tr}\\,\\Sigma + \\varepsilon$, $A = \\Sigma / t$;
      eq. (2)  step k = 1..N      $T_k = \\tfrac12 (3I - Z_{k-1} Y_{k-1})$, $Y_k = Y_{k-1} T_k$,
                                  $Z_k = T_k Z_{k-1}$, from $Y_0 = A$, $Z_0 = I$;
      eq. (3)  first step         $Z_0 = I$: $T_1 = \\tfrac12 (3I - A)$, $Z_1 = T_1$ (no product with I);
      eq. (4)  last step          $P = Y_N$; $Z_N$ is never formed (eq. (5): both at once for N = 1);
      eq. (6)  post-compensation  $C = \\sqrt{t}\\, P$.
    VJP, eqs. (10)-(16): through eq. (6), then the loop of eq. (2) run backwards with the VJP of one
    step (eq. (12); the skipped products stay skipped, eqs. (13)-(15)), then through eq. (1):
      $\\bar\\Sigma = \\bar A / t + (\\langle \\bar C, P\\rangle / (2\\sqrt t)
      - \\langle \\bar A, \\Sigma\\rangle / t^2) I$  (eq. (16)),
    with $\\bar A$ NOT transposed (the known trap, derivations/06_newton_schulz.md §5).

    See derivations/06_newton_schulz.md, eq. (7) for what N steps compute (the scalar
    polynomial p_N on each eigenvalue).

    The backward is written for a general (non-symmetric) input and a general
    upstream gradient, with every transpose in place, so it is the exact
    gradient of the function computed in forward, also under the non-symmetric
    perturbations that finite differences apply.
    """

    def __init__(self, num_iters, eps):
        self.num_iters, self.eps = num_iters, eps

    # -- forward -------------------------------------------------------------------------------
    def forward(self, sigma):
        xp = get_array_module(sigma)
        dtype = sigma.dtype
        three_eye = xp.eye(sigma.shape[-1], dtype=dtype) * 3
        # Python numbers (0.5, eps) are kernel arguments: no host -> device copy, and the dtype is kept
        self.t = _batch_trace(xp, sigma)[:, None, None] + self.eps
        self.a = sigma / self.t  # eq. (1)
        self.ys, self.zs, self.ts = coupled_newton_schulz(self.a, self.num_iters, parallel.matmul, 0.5, three_eye)
        self.p = self.ys[-1]  # eq. (4): P = Y_N
        return xp.sqrt(self.t) * self.p  # eq. (6)

    # -- backward ------------------------------------------------------------------------------
    def backward(self, gc):
        xp = get_array_module(gc)
        sqrt_t = xp.sqrt(self.t)
        gp = sqrt_t * gc  # eq. (10): through C = √t P
        gt = _inner(gc, self.p) / (2 * sqrt_t)  # eq. (11): ∂ℓ/∂t from √t
        ga = self._backprop_iterations(gp)  # eqs. (12)-(15)
        return self._backprop_pre_normalisation(ga, gt)  # eq. (16)

    def _backprop_iterations(self, gp):
        """∂ℓ/∂A from ∂ℓ/∂P: the loop of eq. (2) run backwards, k = N .. 1, one step VJP each."""
        gy, gz = gp, None  # Ȳ_N = P̄; Z_N is never formed, so Z̄_N = 0 (eq. (13))
        for k in range(self.num_iters, 0, -1):
            gy, gz = self._step_backward(k, gy, gz)
        return gy  # Ā = Ȳ_0, since Y_0 = A

    def _step_backward(self, k, gy, gz):
        """The VJP of step k, eq. (12): (Ȳ_k, Z̄_k) -> (Ȳ_{k-1}, Z̄_{k-1}).

        The products the forward skipped are skipped here too: for k = N, Z̄_N = 0 (eq. (13));
        for k = 1, Z_0 = I and Z̄_0 is not needed (I is a constant) (eq. (14)).
        """
        first, last = k == 1, k == self.num_iters
        y_prev, z_prev, t_k = self.ys[k - 1], self.zs[k - 1], self.ts[k]
        # T̄_k = Y_{k-1}ᵀ Ȳ_k + Z̄_k Z_{k-1}ᵀ
        gt_k = parallel.matmul(_mT(y_prev), gy)
        if not last:
            gt_k += gz if first else parallel.matmul(gz, _mT(z_prev))
        # Ȳ_{k-1} = Ȳ_k T_kᵀ − ½ Z_{k-1}ᵀ T̄_k
        gy_prev = parallel.matmul(gy, _mT(t_k)) - 0.5 * (gt_k if first else parallel.matmul(_mT(z_prev), gt_k))
        if first:
            return gy_prev, None
        # Z̄_{k-1} = T_kᵀ Z̄_k − ½ T̄_k Y_{k-1}ᵀ
        gz_prev = -0.5 * parallel.matmul(gt_k, _mT(y_prev))
        if not last:
            gz_prev += parallel.matmul(_mT(t_k), gz)
        return gy_prev, gz_prev

    def _backprop_pre_normalisation(self, ga, gt):
        """∂ℓ/∂Σ from ∂ℓ/∂A and ∂ℓ/∂t (post-compensation part), eq. (16).

        A = Σ / t with t = tr Σ + ε, so ⟨Ā, dA⟩ = ⟨Ā / t, dΣ⟩ − ⟨Ā, Σ⟩ / t² · tr dΣ.
        ⟨Ā, Σ⟩ / t² = ⟨Ā, A⟩ / t. Ā enters UN-transposed (see §5 of the derivation).
        """
        xp = get_array_module(ga)
        eye = xp.eye(ga.shape[-1], dtype=ga.dtype)
        g_trace = gt - _inner(ga, self.a) / self.t  # total ∂ℓ/∂t
        return ga / self.t + g_trace * eye


# ----- eigendecomposition ------------------------------------------------------------------------
#: Largest matrix size for which a stacked ``eigh`` runs as one batched call on a device. CuPy sends
#: every stacked input (ndim > 2) to cuSOLVER's batched Jacobi solver ``syevjBatched``
#: (cupy/linalg/_eigenvalue.py -> cupyx/_cusolver.pyx, ``_syevj_batched``) without a size check
#: and without a fallback, and cuSOLVER documents that solver for n <= 32 only. See
#: derivations/07_eig_sqrt.md, §4.
BATCHED_EIGH_MAX_DIM = 32


def uses_batched_eigh(xp, d):
    """Whether ``batched_eigh`` makes one batched call for (B, d, d) input on backend ``xp``.

    NumPy's stacked eigh is LAPACK's ``syevd`` per matrix: right for every d. On a device
    (CuPy, or its CPU stand-in) only for d <= ``BATCHED_EIGH_MAX_DIM``.
    """
    return xp is np or d <= BATCHED_EIGH_MAX_DIM


def batched_eigh(xp, sym):
    """Eigenvalues (B, d) and eigenvectors (B, d, d) of a batch of symmetric matrices.

    One batched call where the backend's batched solver is right for this size
    (``uses_batched_eigh``); otherwise one single-matrix eigh per matrix, which CuPy runs with
    cuSOLVER's ``syevd`` (the 2-D path of ``cupy.linalg.eigh``, any n). Both give the
    decomposition of eq. (1) of derivations/07_eig_sqrt.md.
    """
    if uses_batched_eigh(xp, sym.shape[-1]):
        return xp.linalg.eigh(sym)
    pairs = [xp.linalg.eigh(sym[i]) for i in range(sym.shape[0])]
    return xp.stack([lam for lam, _ in pairs]), xp.stack([u for _, u in pairs])


class EigSqrt(ArrayFunction):
    """Exact square root of a symmetric PSD batch via eigh: (B, d, d) -> (B, d, d).

    Forward (derivations/07_eig_sqrt.md):
      eq. (1)  $S = \\mathrm{sym}(A) = (A + A^\\top)/2 = U \\Lambda U^\\top$ (eigh),
      eq. (2)  $\\lambda_i \\leftarrow \\max(\\lambda_i, 0)$ (tiny negative eigenvalues from rounding),
      eq. (3)  $C = U \\Lambda^{1/2} U^\\top$.
    VJP (Ionescu et al. matrix backprop), derivations/07_eig_sqrt.md, eqs. (4)-(9):
      $M = U^\\top \\mathrm{sym}(\\bar C) U$, $\\bar U = 2\\,\\mathrm{sym}(\\bar C) U \\Lambda^{1/2}$,
      $\\bar\\lambda_i = M_{ii} / (2\\sqrt{\\lambda_i})$, $K_{ij} = 1/(\\lambda_i - \\lambda_j)$ ($i \\ne j$),
      $\\bar A = U\\, \\mathrm{sym}(K^\\top \\circ (U^\\top \\bar U) + \\mathrm{diag}(\\bar\\lambda))\\, U^\\top$.

    Documented choices:
      * The input is symmetrised first (eq. (1)), so the function is defined for
        every square matrix and its gradient is symmetric.
      * Eigenvalues below 0 (rounding in a rank-deficient covariance) are
        clamped to 0 (eq. (2)).
      * (Near-)equal eigenvalues: where |λ_i − λ_j| <= tol (tol = √(machine ε) ·
        max|λ|), K_ij would be 1/0 or pure rounding noise; for those pairs we use the
        closed-form limit M_ij / (√λ_i + √λ_j) (eq. (8)). For the square root this is
        not an approximation: (√λ_i − √λ_j)/(λ_i − λ_j) = 1/(√λ_i + √λ_j) exactly.
      * Where √λ_i + √λ_j = 0 (both eigenvalues clamped to 0) the derivative of √
        is infinite; those entries of the gradient are set to 0 (eq. (9)).
      * On a GPU, d > 32 (d = 128 in SR-SOP) is decomposed one matrix at a time
        (``batched_eigh``): CuPy's batched eigh is cuSOLVER's Jacobi solver, documented
        for d <= 32 only (derivations/07_eig_sqrt.md, §4). NumPy always takes one batched call.
    """

    def forward(self, a):
        xp = get_array_module(a)
        sym = 0.5 * (a + _mT(a))  # eq. (1)
        lam, u = batched_eigh(xp, sym)
        lam = xp.maximum(lam, 0)  # eq. (2)
        s = xp.sqrt(lam)
        self.u, self.lam, self.s = u, lam, s
        return xp.matmul(u * s[:, None, :], _mT(u))  # eq. (3): U diag(s) Uᵀ

    def backward(self, gc):
        xp = get_array_module(gc)
        u, lam, s = self.u, self.lam, self.s
        dtype = gc.dtype
        zero = dtype.type(0)  # a NumPy scalar: a kernel argument, not a device array

        gsym = 0.5 * (gc + _mT(gc))
        m = xp.matmul(_mT(u), xp.matmul(gsym, u))  # eq. (4): M = Uᵀ sym(C̄) U
        ut_gu = 2 * m * s[:, None, :]  # eq. (5): Uᵀ Ū = 2 M Λ^{1/2}
        s_pos = s > 0
        g_lam = xp.where(s_pos, xp.diagonal(m, axis1=-2, axis2=-1) / (2 * xp.where(s_pos, s, 1)), zero)  # eq. (6)

        diff = lam[:, :, None] - lam[:, None, :]  # λ_i − λ_j
        tol = (xp.finfo(dtype).eps ** 0.5) * xp.abs(lam).max(axis=-1)[:, None, None]
        distinct = xp.abs(diff) > tol
        k = xp.where(distinct, 1 / xp.where(distinct, diff, 1), zero)  # eq. (7): K_ij, 0 if tied
        inner = _mT(k) * ut_gu
        inner = 0.5 * (inner + _mT(inner))  # sym(Kᵀ ∘ UᵀŪ)

        # eq. (8): tied off-diagonal pairs take the limit M_ij / (√λ_i + √λ_j)
        s_sum = s[:, :, None] + s[:, None, :]
        off_diagonal = ~xp.eye(lam.shape[-1], dtype=bool)
        tied = (~distinct) & off_diagonal & (s_sum > 0)  # eq. (9): 0 where s_i + s_j = 0
        inner = inner + xp.where(tied, m / xp.where(tied, s_sum, 1), zero)
        inner = inner + g_lam[:, :, None] * xp.eye(lam.shape[-1], dtype=dtype)
        return xp.matmul(u, xp.matmul(inner, _mT(u)))  # eq. (7): Ā = U (...) Uᵀ (symmetric)


# ----- input validation and public functions -------------------------------------------------------
def _check_matrices(a, name):
    """A floating (B, d, d) batch (always checked); finite values in debug mode only (``gs.debug()``):
    outside it a NaN passes through and the trainer's NaN guard catches it at the loss."""
    check_square_batch(a, name)
    check_finite(a.data, name, hint="check the layers before it (e.g. a diverging loss)")


def sqrtm_newton_schulz(a: TensorLike, num_iters: int, eps: float = DEFAULT_TRACE_EPS) -> Tensor:
    """Approximate matrix square root by ``num_iters`` Newton–Schulz steps (iSQRT-COV).

    a : (B, d, d) covariance matrices (symmetric PSD; float32 or float64).
    num_iters : N >= 1. The paper uses 5, the official release 3.
    eps : added to the trace before normalising, t = tr a + eps (see
        ``DEFAULT_TRACE_EPS``); a zero matrix then gives zeros, not NaN, in
        forward and backward. Gradient checks use eps = 0 on positive-trace input.

    Returns C = √t · p_N(a / t): (B, d, d). See derivations/06_newton_schulz.md.
    In debug mode (``gs.debug()``) NaN/Inf entries and a negative trace (zero, if eps = 0)
    are rejected; outside it they propagate as NaN.
    """
    a = as_tensor(a)
    num_iters = check_int(num_iters, "num_iters", minimum=1)
    eps = check_number(eps, "eps", minimum=0)
    _check_matrices(a, "sqrtm_newton_schulz")
    check_nonnegative_trace(a.data, "sqrtm_newton_schulz", allow_zero=eps > 0)
    return NewtonSchulzSqrt(num_iters, eps)(a)


def sqrtm_newton_schulz_unrolled(a: TensorLike, num_iters: int, eps: float = DEFAULT_TRACE_EPS) -> Tensor:
    """The same iteration as :func:`sqrtm_newton_schulz`, written with differentiable ops.

    It runs the same loop (``coupled_newton_schulz``) on Tensors, so its forward values agree
    with :func:`sqrtm_newton_schulz` to rounding (only the trace is summed differently). The
    backward is *derived by the engine* from the recorded matmuls instead of the hand-written
    recursion, so it keeps the whole graph of iterates (more memory, slower) but supports
    second-order gradients. It is the reference the hand-written backward is checked against
    (tests/test_matrix_sqrt.py, notebook 03). Equations (1)-(6) of derivations/06_newton_schulz.md.
    """
    a = as_tensor(a)
    num_iters = check_int(num_iters, "num_iters", minimum=1)
    eps = check_number(eps, "eps", minimum=0)
    _check_matrices(a, "sqrtm_newton_schulz_unrolled")
    xp = get_array_module(a)
    eye = Tensor(xp.eye(a.shape[-1], dtype=a.dtype))
    t = basic.sum(a * eye, axis=(1, 2), keepdims=True) + eps  # eq. (1): t = tr Σ + ε
    ys, _, _ = coupled_newton_schulz(a / t, num_iters, basic.matmul, 0.5, 3 * eye)  # A = Σ / t; eqs. (2)-(5)
    return basic.sqrt(t) * ys[-1]  # eq. (6): C = √t P, P = Y_N


def sqrtm_eig(a: TensorLike) -> Tensor:
    """Exact square root of symmetric PSD matrices through eigh: (B, d, d) -> (B, d, d).

    The input is symmetrised ((a + aᵀ)/2) and tiny negative eigenvalues are
    clamped to 0. The gradient is finite where the matrix is positive definite;
    see derivations/07_eig_sqrt.md for the treatment of (near-)equal and zero
    eigenvalues, and for how a batch is decomposed on a GPU (``batched_eigh``).
    In debug mode (``gs.debug()``) NaN/Inf entries and a negative trace are rejected.
    """
    a = as_tensor(a)
    _check_matrices(a, "sqrtm_eig")
    check_nonnegative_trace(a.data, "sqrtm_eig", allow_zero=True)
    return EigSqrt()(a)
