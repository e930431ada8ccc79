"""Matrix square roots of covariance matrices: Newton–Schulz (iSQRT-COV) and eigh.

``sqrtm_newton_schulz`` is what SR-SOP uses in training (paper Eq. 9, the
iSQRT-COV algorithm): a fixed number of coupled Newton–Schulz steps, made of
matrix products only, after normalising the input by its trace. With 3–5
steps it is NOT the exact square root (the relative error is 0.3–0.6 for
d = 128, see the table in derivations/06_newton_schulz.md); that is intended.

``sqrtm_eig`` is the exact square root of a symmetric positive semi-definite
matrix through its eigendecomposition; it serves as the reference.

Both work on batches (B, d, d) with batched matmul / eigh (no loop over B),
keep the input's dtype, and have hand-written (kernel-style) backwards.

Derivations: derivations/06_newton_schulz.md and derivations/07_eig_sqrt.md.
"""

from __future__ import annotations

from ..backend import get_array_module, to_cpu
from ..core import Function, Tensor, as_tensor
from . import basic

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
class NewtonSchulzSqrt(Function):
    """Approximate square root by the coupled Newton–Schulz iteration: (B, d, d) -> (B, d, d).

    Forward (derivations/06_newton_schulz.md):
      eq. (1)  pre-normalisation  $t = \\mathrm{tr}\\,\\Sigma + \\varepsilon$, $A = \\Sigma / t$;
      eq. (2)  one iteration      $P = \\tfrac12 A (3I - A)$;
      eq. (3)  first step         $Z_1 = \\tfrac12 (3I - A)$, $Y_1 = A Z_1$;
      eq. (4)  middle steps       $T_k = \\tfrac12 (3I - Z_{k-1} Y_{k-1})$, $Y_k = Y_{k-1} T_k$, $Z_k = T_k Z_{k-1}$;
      eq. (5)  last step          $P = \\tfrac12 Y_{N-1} (3I - Z_{N-1} Y_{N-1})$ (Z_N never formed);
      eq. (6)  post-compensation  $C = \\sqrt{t}\\, P$.
    VJP: eqs. (10)-(16) -- the reverse recursion over the stored Y_k, Z_k, T_k,
    then through eqs. (6) and (1):
      $\\bar\\Sigma = \\bar A / t + (\\langle \\bar C, P\\rangle / (2\\sqrt t)
      - \\langle \\bar A, \\Sigma\\rangle / t^2) I$  (eq. (16)),
    with $\\bar A$ NOT transposed (the known trap, derivations/06_newton_schulz.md §5).

    See derivations/06_newton_schulz.md, eq. (7) for what N steps compute (the scalar
    polynomial p_N on each eigenvalue) and eq. (16) for the full VJP.

    The backward is written for a general (non-symmetric) input and a general
    upstream gradient, with every transpose in place, so it is the exact
    gradient of the function computed in forward, also under the non-symmetric
    perturbations that finite differences apply.
    """

    differentiable_backward = False  # kernel-style: raw arrays in backward

    def __init__(self, num_iters, eps):
        self.num_iters, self.eps = num_iters, eps

    # -- forward -------------------------------------------------------------------------------
    def forward(self, sigma):
        xp = get_array_module(sigma)
        dtype = sigma.dtype
        eye = xp.eye(sigma.shape[-1], dtype=dtype)
        three_eye = 3 * eye
        half = xp.asarray(0.5, dtype=dtype)

        t = _batch_trace(xp, sigma)[:, None, None] + xp.asarray(self.eps, dtype=dtype)
        a = sigma / t  # eq. (1)
        self.t, self.a = t, a
        self.ys, self.zs, self.ts = [], [], []
        if self.num_iters == 1:
            p = half * xp.matmul(a, three_eye - a)  # eq. (2)
        else:
            z = half * (three_eye - a)  # eq. (3)
            y = xp.matmul(a, z)
            self.ys.append(y)
            self.zs.append(z)
            for _ in range(2, self.num_iters):  # eq. (4), k = 2 .. N-1
                tk = half * (three_eye - xp.matmul(z, y))
                y, z = xp.matmul(y, tk), xp.matmul(tk, z)
                self.ts.append(tk)
                self.ys.append(y)
                self.zs.append(z)
            p = half * xp.matmul(y, three_eye - xp.matmul(z, y))  # eq. (5)
        self.p = p
        return xp.sqrt(t) * p  # eq. (6)

    # -- backward ------------------------------------------------------------------------------
    def backward(self, gc):
        xp = get_array_module(gc)
        sqrt_t = xp.sqrt(self.t)
        gp = sqrt_t * gc  # eq. (10): through C = √t P
        gt = _inner(gc, self.p) / (2 * sqrt_t)  # eq. (11): ∂ℓ/∂t from √t
        ga = self._backprop_iterations(gp)  # eqs. (12)-(15)
        return self._backprop_pre_normalisation(ga, gt)  # eq. (16)

    def _backprop_iterations(self, gp):
        """∂ℓ/∂A from ∂ℓ/∂P: the iteration run backwards over the stored Y_k, Z_k, T_k."""
        xp = get_array_module(gp)
        a = self.a
        if self.num_iters == 1:
            # eq. (12): P = 3/2 A − 1/2 A A  ->  Ā = 3/2 P̄ − 1/2 (P̄ Aᵀ + Aᵀ P̄)
            return 1.5 * gp - 0.5 * (xp.matmul(gp, _mT(a)) + xp.matmul(_mT(a), gp))

        # eq. (13): last step P = 3/2 Y − 1/2 Y Z Y
        y, z = self.ys[-1], self.zs[-1]
        yt_gp = xp.matmul(_mT(y), gp)
        gp_yt = xp.matmul(gp, _mT(y))
        gy = 1.5 * gp - 0.5 * (xp.matmul(gp_yt, _mT(z)) + xp.matmul(_mT(z), yt_gp))
        gz = -0.5 * xp.matmul(yt_gp, _mT(y))

        # eq. (14): middle steps in reverse, k = N-1 .. 2
        for k in range(len(self.ts) - 1, -1, -1):
            y_prev, z_prev, tk = self.ys[k], self.zs[k], self.ts[k]
            gtk = xp.matmul(_mT(y_prev), gy) + xp.matmul(gz, _mT(z_prev))
            gy, gz = (
                xp.matmul(gy, _mT(tk)) - 0.5 * xp.matmul(_mT(z_prev), gtk),
                xp.matmul(_mT(tk), gz) - 0.5 * xp.matmul(gtk, _mT(y_prev)),
            )

        # eq. (15): first step Y_1 = A Z_1, Z_1 = 3/2 I − 1/2 A
        gz1 = gz + xp.matmul(_mT(a), gy)
        return xp.matmul(gy, _mT(self.zs[0])) - 0.5 * gz1

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
class EigSqrt(Function):
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
    """

    differentiable_backward = False  # kernel-style: raw arrays in backward

    def forward(self, a):
        xp = get_array_module(a)
        sym = 0.5 * (a + _mT(a))  # eq. (1)
        lam, u = xp.linalg.eigh(sym)
        lam = xp.maximum(lam, xp.asarray(0, dtype=lam.dtype))  # eq. (2)
        s = xp.sqrt(lam)
        self.u, self.lam, self.s = u, lam, s
        return xp.matmul(u * s[:, None, :], _mT(u))  # eq. (3): U diag(s) Uᵀ

    def backward(self, gc):
        xp = get_array_module(gc)
        u, lam, s = self.u, self.lam, self.s
        dtype = gc.dtype
        zero = xp.asarray(0, dtype=dtype)

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
def check_square_batch(a, name, check_finite=True):
    """Raise TypeError/ValueError unless ``a`` is a finite floating batch of square matrices (B, d, d)."""
    if a.dtype.kind != "f":
        raise TypeError(
            f"{name} needs a floating-point batch of matrices, got dtype {a.dtype}; convert it first, "
            "e.g. a.astype(numpy.float64)"
        )
    if a.ndim != 3 or a.shape[1] != a.shape[2]:
        raise ValueError(
            f"{name} expects a batch of square matrices of shape (B, d, d), got shape {tuple(a.shape)}; "
            "a single matrix needs a batch axis: a.reshape(1, d, d)"
        )
    if a.shape[1] == 0:
        raise ValueError(f"{name} needs matrices of size d >= 1, got shape {tuple(a.shape)}")
    if check_finite:
        xp = get_array_module(a)
        if not bool(xp.isfinite(a.data).all()):
            raise ValueError(f"{name} got NaN or Inf entries; check the layers before it (e.g. a diverging loss)")


def _check_trace(a, name, allow_zero):
    """The trace of a covariance is >= 0; a negative one means the input is not PSD."""
    xp = get_array_module(a)
    trace = to_cpu(_batch_trace(xp, a.data))
    if (trace < 0).any():
        bad = [int(i) for i in (trace < 0).nonzero()[0][:5]]
        raise ValueError(
            f"{name} needs positive semi-definite matrices (trace >= 0); matrices {bad} of the batch have a "
            f"negative trace (e.g. {float(trace[bad[0]]):.3g}). Pass a covariance (F.cov_pool) here."
        )
    if not allow_zero and (trace == 0).any():
        raise ValueError(
            f"{name}: a matrix has zero trace and eps=0, which gives 0/0; use eps > 0 (default {DEFAULT_TRACE_EPS})"
        )


def sqrtm_newton_schulz(a, num_iters, eps=DEFAULT_TRACE_EPS):
    """Approximate matrix square root by ``num_iters`` Newton–Schulz steps (iSQRT-COV).

    a : (B, d, d) covariance matrices (symmetric PSD; float32 or float64).
    num_iters : N >= 1. The paper uses 5, the official release 3.
    eps : added to the trace before normalising, t = tr a + eps (see
        ``DEFAULT_TRACE_EPS``); a zero matrix then gives zeros, not NaN, in
        forward and backward. Gradient checks use eps = 0 on positive-trace input.

    Returns C = √t · p_N(a / t): (B, d, d). See derivations/06_newton_schulz.md.
    """
    a = as_tensor(a)
    if isinstance(num_iters, bool) or not isinstance(num_iters, int) or num_iters < 1:
        raise ValueError(f"num_iters must be an integer >= 1, got {num_iters!r}")
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not eps >= 0:
        raise ValueError(f"eps must be a number >= 0, got {eps!r}")
    check_square_batch(a, "sqrtm_newton_schulz")
    _check_trace(a, "sqrtm_newton_schulz", allow_zero=eps > 0)
    return NewtonSchulzSqrt(num_iters, float(eps))(a)


def sqrtm_newton_schulz_unrolled(a, num_iters, eps=DEFAULT_TRACE_EPS):
    """The same iteration as :func:`sqrtm_newton_schulz`, written with differentiable ops.

    Forward values are identical; the backward is *derived by the engine* from
    the recorded matmuls instead of the hand-written recursion, so it keeps the
    whole graph of iterates (more memory, slower) but supports second-order
    gradients. It is the reference the hand-written backward is checked against
    (tests/test_matrix_sqrt.py, notebook 03). Equations (1)-(6) of
    derivations/06_newton_schulz.md, one line each below.
    """
    a = as_tensor(a)
    check_square_batch(a, "sqrtm_newton_schulz_unrolled")
    xp = get_array_module(a)
    eye = Tensor(xp.eye(a.shape[-1], dtype=a.dtype))
    t = basic.sum(a * eye, axis=(1, 2), keepdims=True) + eps  # trace (+ eps)
    A = a / t  # pre-normalisation
    if num_iters == 1:
        P = 0.5 * basic.matmul(A, 3 * eye - A)
    else:
        Z = 0.5 * (3 * eye - A)  # first step, special-cased
        Y = basic.matmul(A, Z)
        for _ in range(2, num_iters):
            T = 0.5 * (3 * eye - basic.matmul(Z, Y))
            Y, Z = basic.matmul(Y, T), basic.matmul(T, Z)
        P = 0.5 * basic.matmul(Y, 3 * eye - basic.matmul(Z, Y))  # last step: Y only
    return P * basic.sqrt(t)  # post-compensation


def sqrtm_eig(a):
    """Exact square root of symmetric PSD matrices through eigh: (B, d, d) -> (B, d, d).

    The input is symmetrised ((a + aᵀ)/2) and tiny negative eigenvalues are
    clamped to 0. The gradient is finite where the matrix is positive definite;
    see derivations/07_eig_sqrt.md for the treatment of (near-)equal and zero
    eigenvalues.
    """
    a = as_tensor(a)
    check_square_batch(a, "sqrtm_eig")
    _check_trace(a, "sqrtm_eig", allow_zero=True)
    return EigSqrt()(a)
