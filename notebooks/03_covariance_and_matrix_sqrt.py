# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 03 — Covariance pooling and the matrix square root
#
# The second-order representation of SR-SOP: the covariance of a feature map (paper Eq. 5),
# its square root by Newton–Schulz iterations (Eq. 9, iSQRT-COV), and the upper triangle as a
# vector. We look at real covariances, watch the iteration converge (slowly — on purpose),
# see why it acts on each eigenvalue as a polynomial $p_N$, and check the hand-written
# backward three ways. Maths: [`05_covariance_pooling.md`](../derivations/05_covariance_pooling.md),
# [`06_newton_schulz.md`](../derivations/06_newton_schulz.md), [`07_eig_sqrt.md`](../derivations/07_eig_sqrt.md).

# %% tags=["parameters"]
BACKEND = "numpy"  # "cupy" runs the same cells on the GPU (falls back to NumPy without one)
SEED = 0
IMAGE_SIZE = 64  # texture images fed to the (untrained) ResNet-18 backbone
DIM = 32  # size of the synthetic well-conditioned matrix
MAX_ITERS = 25  # Newton-Schulz iterations swept in the convergence plot
GRAD_DIM = 5  # matrix size for the element-wise gradient checks
FIGURE_DIR = "figures"

# %%
from pathlib import Path

import matplotlib.pyplot as plt  # each figure: saved to FIGURE_DIR, then plt.show() draws it inline
import numpy as np
import scipy.linalg

import gmsop_np as gs
import gmsop_np.functional as F
from gmsop_np.data import make_textures, texture_class_names
from gmsop_np.models import resnet18

if BACKEND == "cupy" and not gs.cupy_available():
    print("BACKEND='cupy' was asked for, but CuPy with a CUDA GPU is not available here: using NumPy.")
    BACKEND = "numpy"
xp = gs.backend.array_module(BACKEND)  # numpy, or cupy on a GPU
figure_dir = Path(FIGURE_DIR)
figure_dir.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(SEED)


def host(t):
    """A Tensor's data as a NumPy array (copied from the GPU when needed)."""
    return gs.to_cpu(t.data)


# %% [markdown]
# ## 1. Covariances of real feature maps
#
# First the pixels themselves: in the built-in `textures` data set the four classes differ
# *only* in how the colour channels vary together, so the 3×3 covariance of an image's
# pixels shows its class. `F.cov_pool` treats each spatial position of a (B, C, H, W) map as
# one C-dimensional sample and returns the biased (1/L) covariance, (B, C, C).

# %%
images, labels = make_textures(8, image_size=IMAGE_SIZE, seed=SEED)
pixels = (images.astype(np.float64) - 128.0) / 45.0
pixel_cov = host(F.cov_pool(gs.Tensor(xp.asarray(pixels))))
oracle = np.stack([np.cov(p.reshape(3, -1), bias=True) for p in pixels])
print("cov_pool:", pixel_cov.shape, "| max |cov_pool - numpy.cov(bias=True)| =", np.abs(pixel_cov - oracle).max())

# %% [markdown]
# Then a deep feature map: the last stage of an (untrained) ResNet-18 gives 128 channels on
# an 8×8 map, i.e. only L = 64 samples of dimension 128 — the covariance has rank ≤ 63, and
# its spectrum spans many orders of magnitude. (The official release keeps a 16×16 map, so
# L = 256.) This is the kind of matrix the square root must handle.

# %%
backbone = resnet18(head="srsop", num_classes=4, input_size=IMAGE_SIZE, seed=SEED).eval()
if BACKEND == "cupy":
    backbone.to_gpu()
with gs.no_grad():
    feats = backbone.features(gs.Tensor(xp.asarray(pixels[:2], dtype=xp.float32)))
feature_cov = host(F.cov_pool(gs.Tensor(feats.data.astype(xp.float64))))  # float64 for the comparisons
eigenvalues = np.linalg.eigvalsh(feature_cov[0])[::-1]
L = feats.shape[2] * feats.shape[3]
print(f"feature map {tuple(feats.shape)}: L = {L} positions, d = {feats.shape[1]}")
print(f"eigenvalues > 1e-6 x largest: {(eigenvalues > 1e-6 * eigenvalues[0]).sum()} (rank <= L - 1 = {L - 1})")

fig, axes = plt.subplots(1, 5, figsize=(14, 3), gridspec_kw=dict(width_ratios=[1, 1, 1, 1, 1.6]))
names = texture_class_names()
for ax, cls in zip(axes[:4], range(4)):
    i = int(np.flatnonzero(labels == cls)[0])
    std = np.sqrt(np.diag(pixel_cov[i]))
    ax.imshow(pixel_cov[i] / np.outer(std, std), cmap="RdBu_r", vmin=-1, vmax=1)  # as correlations
    ax.set_title(f"class {names[cls]}", fontsize=9)
    ax.set_xticks(range(3), list("RGB"))
    ax.set_yticks(range(3), list("RGB"))
axes[4].semilogy(np.maximum(eigenvalues, 1e-12), ".")
axes[4].axvline(L - 1, color="gray", ls="--", lw=0.8)
axes[4].set_title(f"ResNet-18 stage-4 covariance: {feats.shape[1]} eigenvalues", fontsize=9)
axes[4].set_xlabel("index")
fig.suptitle("pixel covariance (shown as correlation) of one image per class; spectrum of a deep covariance")
fig.tight_layout()
fig.savefig(figure_dir / "03_covariances.png")
plt.show()

# %% [markdown]
# ## 2. Newton–Schulz converges to the square root — slowly
#
# The iteration first divides by the trace (eigenvalues of $A = \Sigma/\mathrm{tr}\,\Sigma$ lie
# in $[0, 1]$ and sum to 1, so their mean is $1/d$), runs $N$ coupled steps of matrix products,
# and multiplies by $\sqrt{\mathrm{tr}\,\Sigma}$. Compared with SciPy's `sqrtm` on a
# well-conditioned matrix, and with the exact eigendecomposition root (`F.sqrtm_eig`) on the
# rank-deficient deep covariance.

# %%
Q, _ = np.linalg.qr(rng.standard_normal((DIM, DIM)))
well = (Q * rng.uniform(1.0, 10.0, DIM)) @ Q.T  # eigenvalues in [1, 10]
exact_well = scipy.linalg.sqrtm(well).real
exact_deep = host(F.sqrtm_eig(gs.Tensor(xp.asarray(feature_cov[:1]))))[0]


def relative_error(matrix, exact, num_iters):
    root = host(F.sqrtm_newton_schulz(gs.Tensor(xp.asarray(matrix[None])), num_iters, eps=0.0))[0]
    return np.linalg.norm(root - exact) / np.linalg.norm(exact)


iterations = list(range(1, MAX_ITERS + 1))
errors_well = [relative_error(well, exact_well, n) for n in iterations]
errors_deep = [relative_error(feature_cov[0], exact_deep, n) for n in iterations]
for n in (3, 5, 10, MAX_ITERS):
    print(
        f"N = {n:2}: relative error {errors_well[n - 1]:.2e} (well-conditioned, d = {DIM}),"
        f" {errors_deep[n - 1]:.2e} (deep covariance, d = {feature_cov.shape[1]})"
    )

fig, ax = plt.subplots(figsize=(5.5, 3.8))
ax.semilogy(iterations, errors_well, "o-", ms=3, label=f"well-conditioned, d = {DIM} (vs scipy sqrtm)")
ax.semilogy(iterations, errors_deep, "s-", ms=3, label=f"ResNet features, d = {feature_cov.shape[1]} (vs eigh)")
ax.axvspan(3, 5, color="orange", alpha=0.2, label="paper / release: 5 / 3 iterations")
ax.set_xlabel("Newton-Schulz iterations N")
ax.set_ylabel("relative Frobenius error")
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(figure_dir / "03_ns_convergence.png")
plt.show()

# %% [markdown]
# ## 3. What N steps compute: a polynomial $p_N$ of each eigenvalue
#
# Every step multiplies polynomials in $A$, so $Y_N = p_N(A)$ shares $A$'s eigenvectors and
# maps each eigenvalue $a$ to the scalar $p_N(a)$. Below, the same recursion on scalars
# (a toy, to compare with the library): $U\,\sqrt{t}\,p_N(\Lambda/t)\,U^\top$ equals the
# library's result for *every* N, while $p_N(a) \approx \sqrt a$ only for $a$ not too small.


# %%
def p_N(a, n):
    """Scalar Newton-Schulz on an array of eigenvalues: the N steps of eq. (2) of
    derivations/06_newton_schulz.md from y_0 = a, z_0 = 1 (on scalars, no product is worth skipping)."""
    y, z = a, np.ones_like(a)
    for _ in range(n):
        t = 0.5 * (3 - z * y)
        y, z = y * t, t * z
    return y


lam, U = np.linalg.eigh(feature_cov[0])
lam = np.clip(lam, 0, None)
trace = lam.sum()
polynomial_errors = []
for n in (1, 2, 3, 5, 8):
    via_eigenvalues = (U * (np.sqrt(trace) * p_N(lam / trace, n))) @ U.T
    library = host(F.sqrtm_newton_schulz(gs.Tensor(xp.asarray(feature_cov[:1])), n, eps=0.0))[0]
    polynomial_errors.append(np.abs(via_eigenvalues - library).max() / np.abs(library).max())
    print(f"N = {n}: max |U p_N(Lambda) U^T - library| / max|library| = {polynomial_errors[-1]:.1e}")

a = np.linspace(0, 1, 400)
fig, ax = plt.subplots(figsize=(5.5, 3.8))
ax.plot(a, np.sqrt(a), "k", lw=2, label="sqrt(a)")
for n in (1, 3, 5, 10):
    ax.plot(a, p_N(a, n), label=f"p_{n}(a)")
ax.plot(lam / trace, np.zeros_like(lam), "|", color="gray", ms=12, label="eigenvalues of A (deep cov.)")
ax.set_xlabel("eigenvalue a of A = Sigma / tr(Sigma)")
ax.legend(fontsize=8)
ax.set_title("Newton-Schulz acts on each eigenvalue")
fig.tight_layout()
fig.savefig(figure_dir / "03_ns_polynomial.png")
plt.show()


# %% [markdown]
# ## 4. The hand-written backward, checked three ways
#
# `F.sqrtm_newton_schulz` has a kernel-style backward: the loop of steps run in reverse over
# the stored iterates, one step's VJP per iteration, then through the trace normalisation
# (06_newton_schulz.md, eqs. (10)-(16)). We compare it with (a) central differences, and (b) the
# engine differentiating the same iteration *unrolled* from differentiable ops
# (`F.sqrtm_newton_schulz_unrolled`: the same loop run on Tensors with `F.matmul` etc.). The
# upstream gradient is random and **not symmetric** (the triangular vectorisation after it
# produces exactly that).


# %%
def vjp(fn, a, u):
    t = gs.Tensor(xp.asarray(a), requires_grad=True)
    fn(t).backward(xp.asarray(u))
    return t.grad.numpy()


def finite_difference_vjp(fn, a, u, eps=1e-6):
    g = np.zeros(a.shape)
    for i in np.ndindex(*a.shape):
        step = np.zeros(a.shape)
        step[i] = eps
        with gs.no_grad():
            plus = np.vdot(u, host(fn(gs.Tensor(xp.asarray(a + step)))))
            minus = np.vdot(u, host(fn(gs.Tensor(xp.asarray(a - step)))))
        g[i] = (plus - minus) / (2 * eps)
    return g


X = rng.standard_normal((GRAD_DIM, 3 * GRAD_DIM))
sigma = (X @ X.T / X.shape[1])[None]  # a positive definite covariance
u = rng.standard_normal(sigma.shape)  # non-symmetric cotangent
checks = {}
for n in (1, 2, 3, 5, 8):
    library_fn = lambda s, n=n: F.sqrtm_newton_schulz(s, n, eps=0.0)  # noqa: E731
    hand = vjp(library_fn, sigma, u)
    unrolled = vjp(lambda s, n=n: F.sqrtm_newton_schulz_unrolled(s, n, eps=0.0), sigma, u)
    numeric = finite_difference_vjp(library_fn, sigma, u)
    checks[n] = (np.abs(hand - unrolled).max(), np.abs(hand - numeric).max())
    print(
        f"N = {n}: |hand - unrolled autodiff| = {checks[n][0]:.1e},  |hand - finite differences| = {checks[n][1]:.1e}"
    )
gs.check_backward(lambda s: F.sqrtm_newton_schulz(s, 5, eps=0.0), [xp.asarray(sigma)])
gs.check_backward(F.sqrtm_eig, [xp.asarray(sigma)])
print("check_backward passes for sqrtm_newton_schulz (N = 5) and sqrtm_eig")

# %% [markdown]
# The last rung of the ladder: as N grows, the NS gradient converges to the gradient of the
# exact root (eigendecomposition backward, 07_eig_sqrt.md). `sqrtm_eig` symmetrises its input,
# so its gradient is the symmetric part $\mathrm{sym}(G) = (G + G^\top)/2$ of the general one:
# we compare symmetric parts.

# %%
eig_grad = vjp(F.sqrtm_eig, sigma, u)
grad_iters = list(range(1, MAX_ITERS + 1))
sym = lambda g: (g + np.swapaxes(g, -1, -2)) / 2  # noqa: E731
to_exact = [
    np.linalg.norm(sym(vjp(lambda s, n=n: F.sqrtm_newton_schulz(s, n, eps=0.0), sigma, u)) - eig_grad)
    / np.linalg.norm(eig_grad)
    for n in grad_iters
]
print(
    f"relative distance of the NS gradient to the exact one: N = 5: {to_exact[4]:.2e}, "
    f"N = {MAX_ITERS}: {to_exact[-1]:.2e}"
)

fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
ns = list(checks)
axes[0].semilogy(ns, [checks[n][0] for n in ns], "o-", label="hand vs unrolled autodiff")
axes[0].semilogy(ns, [checks[n][1] for n in ns], "s-", label="hand vs finite differences")
axes[0].set_xlabel("iterations N")
axes[0].set_ylabel("max abs difference")
axes[0].set_title("the NS backward, checked")
axes[0].legend(fontsize=8)
axes[1].semilogy(grad_iters, to_exact, "o-", ms=3)
axes[1].set_xlabel("iterations N")
axes[1].set_ylabel("relative distance")
axes[1].set_title("NS gradient -> exact (eigh) gradient")
fig.tight_layout()
fig.savefig(figure_dir / "03_backward_check.png")
plt.show()

# %% [markdown]
# ## 5. SR-SOP in one line
#
# covariance → square root → upper triangle (row-major, diagonal included, no √2 scaling):
# a 128-channel map becomes a 128·129/2 = 8256-dimensional vector.

# %%
with gs.no_grad():
    representation = F.triu_vec(F.sqrtm_newton_schulz(F.cov_pool(feats), 5))
print("SR-SOP representation:", tuple(representation.shape), "| 128 * 129 / 2 =", 128 * 129 // 2)
small = np.arange(9.0).reshape(1, 3, 3)
print("triu_vec of [[0,1,2],[3,4,5],[6,7,8]] ->", host(F.triu_vec(gs.Tensor(xp.asarray(small))))[0])

# %% [markdown]
# ## Milestone checks

# %%
assert np.abs(pixel_cov - oracle).max() < 1e-12
assert errors_well[-1] < 1e-8, "NS converges to scipy's sqrtm on well-conditioned input"
assert errors_deep[2] > 0.2 and errors_deep[4] > 0.05, "with 3-5 iterations NS is far from the exact root"
assert errors_deep[-1] < 1e-6, "... and converges with many iterations"
assert max(polynomial_errors) < 1e-9, "U p_N(Lambda) U^T is exactly what N steps compute"
assert all(h_u < 1e-12 and h_n < 1e-7 for h_u, h_n in checks.values())
assert to_exact[-1] < 1e-6 and to_exact[-1] < to_exact[4]
assert representation.shape == (2, 8256)
assert list(host(F.triu_vec(gs.Tensor(xp.asarray(small))))[0]) == [0, 1, 2, 4, 5, 8]
for name in ["03_covariances.png", "03_ns_convergence.png", "03_ns_polynomial.png", "03_backward_check.png"]:
    assert (figure_dir / name).stat().st_size > 0
print("all checks passed")
