# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 02 — Convolution as a matrix product, and the paper's ResNet-18
#
# `F.conv2d` copies every receptive field into a column (`im2col`), multiplies once by the
# weight matrix, and in backward adds the columns back (`col2im`, the adjoint of `im2col`).
# Then the backbone of the paper (Table 1): a ResNet-18 modified for 64×64 images.
# Maths: [`derivations/02_convolution.md`](../derivations/02_convolution.md).

# %% tags=["parameters"]
BACKEND = "numpy"  # "cupy" runs the same cells on the GPU (falls back to NumPy without one)
SEED = 0
INPUT_SIZE = 64  # image side for the ResNet-18 forward pass (the paper: 64)
BATCH = 2
FIGURE_DIR = "figures"

# %%
import time
from pathlib import Path

import matplotlib.pyplot as plt  # each figure: saved to FIGURE_DIR, then plt.show() draws it inline
import numpy as np

import gmsop_np as gs
import gmsop_np.functional as F
from gmsop_np.functions.conv import col2im, im2col  # raw-array helpers behind F.conv2d
from gmsop_np.models import resnet18

if BACKEND == "cupy" and not gs.cupy_available():
    print("BACKEND='cupy' was asked for, but CuPy with a CUDA GPU is not available here: using NumPy.")
    BACKEND = "numpy"
xp = gs.backend.array_module(BACKEND)  # numpy, or cupy on a GPU
figure_dir = Path(FIGURE_DIR)
figure_dir.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(SEED)

# %% [markdown]
# ## 1. `im2col`, pictured
#
# A 4×4 image (values 0…15), a 3×3 kernel, padding 1, stride 1: 16 output pixels, each
# reading 9 input pixels. `im2col` lays them out as a 9 × 16 matrix: column *r* holds the
# receptive field of output pixel *r* (padding reads as 0 — shown as −1 below to stand out).

# %%
image = np.arange(16, dtype=np.float64).reshape(1, 1, 4, 4)
marked = np.pad(image, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-1)  # mark the padding
cols = im2col(image, 3, 3, padding=(1, 1))  # what conv2d uses (zero padding)
matrix = im2col(marked, 3, 3).reshape(9, 16)  # the same fields, read from the marked padded image
im2col_consistent = np.array_equal(np.where(matrix < 0, 0, matrix), cols.reshape(9, 16))
print("im2col output shape (B, C, kh, kw, Ho, Wo):", cols.shape, "-> as a matrix", matrix.shape)

fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw=dict(width_ratios=[1, 2.6]))
axes[0].imshow(marked[0, 0], cmap="Blues", vmin=-1, vmax=16)
for (r, c), v in np.ndenumerate(marked[0, 0]):
    axes[0].text(c, r, "pad" if v < 0 else int(v), ha="center", va="center", fontsize=7)
axes[0].add_patch(plt.Rectangle((-0.5, -0.5), 3, 3, fill=False, ec="red", lw=2))
axes[0].set_title("padded input\n(red: field of output pixel 0)", fontsize=9)
axes[1].imshow(matrix, cmap="Blues", vmin=-1, vmax=16, aspect="auto")
for (r, c), v in np.ndenumerate(matrix):
    axes[1].text(c, r, "·" if v < 0 else int(v), ha="center", va="center", fontsize=7)
axes[1].add_patch(plt.Rectangle((-0.5, -0.5), 1, 9, fill=False, ec="red", lw=2))
axes[1].set_xlabel("output pixel (column)")
axes[1].set_ylabel("kernel offset (row)")
axes[1].set_title("im2col: one column per output pixel")
for ax in axes:
    ax.set_xticks([])
    ax.set_yticks([])
fig.tight_layout()
fig.savefig(figure_dir / "02_im2col.png")
plt.show()


# %% [markdown]
# ## 2. The convolution is one matrix product
#
# Compared with a direct (slow, loop-based) convolution written here as the oracle.


# %%
def conv_by_loops(x, W, b, stride, padding):
    """Toy oracle: y[b, o, r, s] = sum_{c,i,j} W[o, c, i, j] x_pad[b, c, r*stride + i, s*stride + j] + b[o]."""
    x_pad = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    C_out, _, kh, kw = W.shape
    Ho = (x.shape[2] + 2 * padding - kh) // stride + 1
    Wo = (x.shape[3] + 2 * padding - kw) // stride + 1
    y = np.zeros((x.shape[0], C_out, Ho, Wo))
    for r in range(Ho):
        for s in range(Wo):
            field = x_pad[:, :, r * stride : r * stride + kh, s * stride : s * stride + kw]
            y[:, :, r, s] = np.einsum("bcij,ocij->bo", field, W) + b
    return y


x = rng.standard_normal((2, 3, 7, 6))
W = rng.standard_normal((4, 3, 3, 3))
b = rng.standard_normal(4)
y = F.conv2d(gs.Tensor(xp.asarray(x)), gs.Tensor(xp.asarray(W)), gs.Tensor(xp.asarray(b)), stride=2, padding=1)
conv_error = np.abs(gs.to_cpu(y.data) - conv_by_loops(x, W, b, 2, 1)).max()
print("output shape", y.shape, "| max |im2col conv - loop conv| =", conv_error)

# %% [markdown]
# `col2im` is the adjoint of `im2col`: $\langle \mathrm{im2col}(x), c\rangle = \langle x, \mathrm{col2im}(c)\rangle$
# for every $x$ and $c$ — that is exactly what makes it the backward of the copy.

# %%
c = rng.standard_normal(im2col(x, 3, 3, stride=(2, 2), padding=(1, 1)).shape)
lhs = np.vdot(im2col(x, 3, 3, stride=(2, 2), padding=(1, 1)), c)
rhs = np.vdot(x, col2im(c, x.shape, stride=(2, 2), padding=(1, 1)))
print(f"<im2col(x), c> = {lhs:.10f}\n<x, col2im(c)> = {rhs:.10f}")

# %% [markdown]
# ## 3. The convolution's gradient, checked
#
# `gs.check_backward` compares the hand-written backward with central differences, using a
# random upstream gradient (notebook 00). The plot shows every entry of $\bar W$ both ways.

# %%
conv = lambda x, W, b: F.conv2d(x, W, b, stride=2, padding=1)  # noqa: E731
gs.check_backward(conv, [xp.asarray(x), xp.asarray(W), xp.asarray(b)], mode="directional", num_directions=6)
print("check_backward: conv2d (stride 2, padding 1) passes for x, W and b")

u = rng.standard_normal(y.shape)
Wt = gs.Tensor(xp.asarray(W), requires_grad=True)
conv(gs.Tensor(xp.asarray(x)), Wt, gs.Tensor(xp.asarray(b))).backward(xp.asarray(u))
analytic = Wt.grad.numpy().ravel()
numeric = np.empty(W.size)
eps = 1e-6
for i in range(W.size):
    step = np.zeros(W.size)
    step[i] = eps
    plus = conv_by_loops(x, W + step.reshape(W.shape), b, 2, 1)
    minus = conv_by_loops(x, W - step.reshape(W.shape), b, 2, 1)
    numeric[i] = np.vdot(u, plus - minus) / (2 * eps)
print("max |analytic - numeric| over the", W.size, "weights:", np.abs(analytic - numeric).max())

fig, ax = plt.subplots(figsize=(4, 4))
ax.plot(numeric, analytic, "o", ms=4)
lim = np.abs(numeric).max() * 1.1
ax.plot([-lim, lim], [-lim, lim], "k--", lw=0.8)
ax.set_xlabel("central difference")
ax.set_ylabel("backward (col2im / matmul)")
ax.set_title("dL/dW of conv2d, every entry")
fig.tight_layout()
fig.savefig(figure_dir / "02_conv_gradient.png")
plt.show()

# %% [markdown]
# ## 4. The paper's ResNet-18 (Table 1)
#
# conv1 3×3 with 16 channels and no max-pool (64×64 images are small), then four stages of
# two basic blocks with widths 16, 32, 64, 128; stages 2–4 halve the map (64 → 32 → 16 → 8).
# We run one batch through it, stage by stage, and count parameters.

# %%
model = resnet18(head="gap", num_classes=1000, input_size=INPUT_SIZE, seed=SEED).eval()
if BACKEND == "cupy":
    model.to_gpu()
images = gs.Tensor(xp.asarray(rng.standard_normal((BATCH, 3, INPUT_SIZE, INPUT_SIZE)), dtype=xp.float32))
rows = []
with gs.no_grad():
    h = model.stem(images)
    rows.append(("conv1 3x3 + BN + ReLU", 1, h.shape, model.stem.num_parameters()))
    for i, stage in enumerate(model.stages, start=1):
        h = stage(h)
        rows.append((f"stage {i}: {len(stage)} basic blocks", stage[0].conv1.stride, h.shape, stage.num_parameters()))
    logits = model.head(h)
    rows.append(("head: GAP + FC 128 -> 1000", "-", logits.shape, model.head.num_parameters()))
print(f"{'layer':28} {'stride':>6}  {'output (B, C, H, W)':24} {'parameters':>10}")
for name, stride, shape, count in rows:
    print(f"{name:28} {str(stride):>6}  {str(tuple(shape)):24} {count:>10,}")
print(f"{'total':28} {'':>6}  {'':24} {model.num_parameters():>10,}")

# %% [markdown]
# Parameter counts against the paper (Table 3 reports ResNet-18-512d: 1.3M, a 1×1 conv to
# 512 channels + BN + ReLU before GAP). Most of a 1000-class model's parameters sit in the
# last stage and in the classifier.

# %%
counts = {
    "ResNet-18 (GAP, 128-d)": model.num_parameters(),
    "ResNet-18-512d": resnet18(head="gap512", num_classes=1000, seed=SEED).num_parameters(),
}
paper = {"ResNet-18-512d": 1.3e6}
for name, n in counts.items():
    note = f"(paper: {paper[name] / 1e6:.1f}M)" if name in paper else ""
    print(f"{name:24} {n / 1e6:.2f}M {note}")

fig, ax = plt.subplots(figsize=(6, 3))
names = [r[0].split(":")[0] for r in rows]
ax.barh(names[::-1], [r[3] for r in rows][::-1])
ax.set_xlabel("parameters")
ax.set_title(f"ResNet-18 (GAP head, 1000 classes): {model.num_parameters() / 1e6:.2f}M parameters")
fig.tight_layout()
fig.savefig(figure_dir / "02_resnet18_parameters.png")
plt.show()

# %% [markdown]
# One training-mode forward and backward pass through the whole network (`model.train()`:
# batch norm now uses the batch's statistics): every parameter receives a gradient of its
# own shape.

# %%
model.train()
labels = xp.asarray(rng.integers(0, 1000, BATCH))
start = time.perf_counter()
loss = F.softmax_cross_entropy(model(images), labels)
model.zero_grad()
loss.backward()
print(
    f"loss {loss.item():.3f} (log 1000 = {np.log(1000):.3f}); "
    f"forward + backward took {time.perf_counter() - start:.2f} s"
)
missing = [name for name, p in model.named_parameters() if p.grad is None or p.grad.shape != p.shape]
print("parameters without a gradient:", missing or "none")

# %% [markdown]
# ## Milestone checks

# %%
assert im2col_consistent
assert conv_error < 1e-12
assert abs(lhs - rhs) < 1e-9 * max(1.0, abs(lhs))
assert np.allclose(analytic, numeric, atol=1e-6)
spatial = [tuple(r[2][2:]) for r in rows[:-1]]
s = INPUT_SIZE
last = s // 8 if s >= 64 else s // 4  # inputs below 64x64 keep the last stage's resolution (models.py)
assert spatial == [(s, s), (s, s), (s // 2, s // 2), (s // 4, s // 4), (last, last)], spatial
assert [r[2][1] for r in rows[:-1]] == [16, 16, 32, 64, 128]
assert tuple(logits.shape) == (BATCH, 1000)
assert abs(counts["ResNet-18-512d"] / paper["ResNet-18-512d"] - 1) < 0.05, "within 5% of Table 3"
assert not missing and np.isfinite(loss.item())
for name in ["02_im2col.png", "02_conv_gradient.png", "02_resnet18_parameters.png"]:
    assert (figure_dir / name).stat().st_size > 0
print("all checks passed")
