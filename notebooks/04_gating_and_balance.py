# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 — Noisy Top-K gating and the balance loss
#
# GM-SOP picks, for every image, K of N component models. The gate computes noisy logits
# (paper Eq. 2), keeps the K largest and takes a softmax over them (Eq. 3); the balance loss
# (Eq. 4) keeps the components equally important. We look at the weights, check the
# gradients, and reproduce the paper's Fig. 2 in miniature: component usage without and
# with the balance loss. Maths: [`08_gating.md`](../derivations/08_gating.md),
# [`09_balance_loss.md`](../derivations/09_balance_loss.md).

# %% tags=["parameters"]
BACKEND = "numpy"  # "cupy" runs the same cells on the GPU (falls back to NumPy without one)
SEED = 0
N_COMPONENTS = 8  # N, the number of components in the Fig. 2 miniature
K = 2  # K, components per image
STEPS = 120  # training steps per run of the miniature
BATCH = 64
LR = 0.1
IMAGE_SIZE = 16
FIGURE_DIR = "figures"

# %%
from pathlib import Path

import matplotlib.pyplot as plt  # each figure: saved to FIGURE_DIR, then plt.show() draws it inline
import numpy as np

import gmsop_np as gs
import gmsop_np.functional as F
from gmsop_np.data import make_textures
from gmsop_np.nn import GMSOP, BatchNorm1d, Linear

if BACKEND == "cupy" and not gs.cupy_available():
    print("BACKEND='cupy' was asked for, but CuPy with a CUDA GPU is not available here: using NumPy.")
    BACKEND = "numpy"
xp = gs.backend.array_module(BACKEND)  # numpy, or cupy on a GPU
figure_dir = Path(FIGURE_DIR)
figure_dir.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(SEED)

# %% [markdown]
# ## 1. Noisy logits and Top-K weights
#
# $H = W_g u + \gamma \cdot \mathrm{softplus}(W_n u)$ with one $\gamma \sim N(0, 1)$ per image
# shared by its N logits (the official release), only in training. Then the K largest logits
# survive; the weights are exactly 0 elsewhere and each row sums to 1.

# %%
B, D, N = 6, 10, 8
u = xp.asarray(rng.standard_normal((B, D)))
W_g = xp.asarray(rng.standard_normal((N, D)) / np.sqrt(D))
W_n = xp.asarray(rng.standard_normal((N, D)) / np.sqrt(D))
gamma = F.draw_gate_noise(SEED, B, N, "shared", xp=xp)  # (B, 1), drawn where the data lives
clean = F.noisy_gate_logits(u, W_g)  # evaluation: no noise
noisy = F.noisy_gate_logits(u, W_g, W_n, noise=gamma)
weights, indices = F.topk_softmax(noisy, 3)
w = gs.to_cpu(weights.data)
print("selected components per image (largest logit first):\n", gs.to_cpu(indices.data))
print("non-zeros per row:", (w > 0).sum(axis=1), "| row sums:", w.sum(axis=1).round(12))

fig, axes = plt.subplots(1, 3, figsize=(12, 3))
for ax, data, title in [
    (axes[0], gs.to_cpu(clean.data), "clean logits W_g u"),
    (axes[1], gs.to_cpu(noisy.data), "noisy logits (Eq. 2)"),
    (axes[2], w, "Top-3 softmax weights (Eq. 3)"),
]:
    image = ax.imshow(data, cmap="viridis")
    ax.set_title(title)
    ax.set_xlabel("component")
    ax.set_ylabel("image")
    fig.colorbar(image, ax=ax, fraction=0.046)
fig.tight_layout()
fig.savefig(figure_dir / "04_topk_weights.png")
plt.show()

# %% [markdown]
# ## 2. Gradients of the gate
#
# The Top-K softmax backward reaches only the selected logits: the others get exactly 0
# (not a small number). The gradient check keeps a margin at the K-th logit (at a tie the
# selection, and so the function, jumps).

# %%
logits = np.sort(rng.standard_normal((4, N)), axis=1)[:, ::-1] + np.arange(N)[::-1] * 0.3
logits = np.ascontiguousarray(logits[:, rng.permutation(N)])  # distinct, well-separated logits
gs.check_backward(lambda h: F.topk_softmax(h, 3)[0], [xp.asarray(logits)])
h = gs.Tensor(xp.asarray(logits), requires_grad=True)
wk, _ = F.topk_softmax(h, 3)
wk.backward(xp.asarray(rng.standard_normal(logits.shape)))
unselected_grad = gs.to_cpu(h.grad.data)[gs.to_cpu(wk.data) == 0]
print("check_backward passes; gradient on unselected logits: max |.| =", np.abs(unselected_grad).max())
gs.check_backward(lambda u_, g_, n_: F.noisy_gate_logits(u_, g_, n_, noise=gamma), [u, W_g, W_n])
print("check_backward passes for the noisy logits (u, W_g, W_n)")

# %% [markdown]
# ## 3. The balance loss (Eq. 4)
#
# Importance $v_i = \sum_s w_{s,i}$; $L_B = \alpha\,(\mathrm{std}(v)/\mathrm{mean}(v))^2$ with the
# sample std (ddof = 1, as the release). Since each row sums to 1, mean(v) = B/N. Its
# extremes: 0 for perfectly balanced routing; all images on the same K components with
# weights 1/K gives $\mathrm{CV}^2 = N/K - 1$ (ddof 0).


# %%
def balance_oracle(w, alpha=100.0, ddof=1):
    v = w.sum(axis=0)
    return alpha * (np.std(v, ddof=ddof) / np.mean(v)) ** 2


collapsed = np.zeros((16, N))
collapsed[:, :K] = 1.0 / K
balanced = np.zeros((16, N))
for s in range(16):
    balanced[s, [(K * s + j) % N for j in range(K)]] = 1.0 / K
for name, wts in [("Top-3 weights above", w), ("collapsed", collapsed), ("balanced", balanced)]:
    value = F.balance_loss(gs.Tensor(xp.asarray(wts))).item()
    print(f"{name:20} L_B = {value:9.4f}   (oracle {balance_oracle(wts):9.4f})")
worst_cv2 = F.balance_loss(gs.Tensor(xp.asarray(collapsed)), alpha=1.0, ddof=0).item()
print(f"collapsed, alpha = 1, ddof = 0: CV^2 = {worst_cv2:.4f}  (N/K - 1 = {N / K - 1})")
gs.check_backward(F.balance_loss, [xp.asarray(w)])
print("check_backward passes for the balance loss")

# %% [markdown]
# ## 4. Fig. 2 in miniature: usage without and with the balance loss
#
# A small GM-SOP-N-K reads `textures` images directly: each of its N components is 1×1 convs
# 3 → 16 → 6 with ReLU, then SR-SOP (21 numbers per image); BatchNorm and a linear classifier follow,
# as after the paper's heads. We train it with SGD (momentum 0.9) on `CE_mean + L_B / B` (the
# release's weighting, 09_balance_loss.md) once with α = 0 and once with α = 100, on 512 images, and
# measure the error on 256 others (chance: 75 %). `usage_counts` counts the images each component
# received; the histograms show the last third of the steps (our "last epoch").
#
# Two choices differ from the release, on purpose:
#
# * The gate's clean weights $W_g$ start from random N(0, 1) entries ($W_n$ from 0) instead of the
#   constant 1/D, so that the routing depends on the image from the first step on. (With the
#   constant init every logit of every image ties at first; in training `GMSOP` breaks exact ties
#   at random, `tie_break="random"`, the default, so each image would start on K components drawn
#   at random, whatever its content; in evaluation a tie goes to the lowest index.)
# * The gating noise is drawn per (image, component) (`noise="independent"`, Shazeer et al.), not
#   once per image for all N logits as in the release (`"shared"`, section 1). With a shared draw
#   every logit of an image moves together, which leaves the ranking of the components to the clean
#   logits alone; in a run this short the balance loss then evens the usage only in some seeds.

# %%
images, labels = make_textures(512 + 256, image_size=IMAGE_SIZE, seed=SEED)
pixels = (images.astype(np.float32) - 128.0) / 45.0
train, val = slice(0, 512), slice(512, None)


def train_mixture(alpha):
    """GM-SOP + BN + linear classifier, trained for STEPS steps; (usage per third, CE per step, val error)."""
    mixture = GMSOP(3, N_COMPONENTS, K, hidden=16, out=6, num_iters=3, alpha=alpha, noise="independent",
                    gate_init="zeros", rng=SEED)  # fmt: skip
    mixture.W_g.data = np.random.default_rng(SEED + 100).standard_normal(mixture.W_g.shape).astype(np.float32)
    norm = BatchNorm1d(mixture.representation_dim)
    classifier = Linear(mixture.representation_dim, 4, rng=SEED)
    modules = [mixture, norm, classifier]
    if BACKEND == "cupy":
        for module in modules:
            module.to_gpu()

    def network(x):
        return classifier(norm(mixture(x)))

    params = [p for module in modules for p in module.parameters()]
    velocity = [None] * len(params)
    order = np.random.default_rng(SEED)
    usage, losses = [], []
    for step in range(STEPS):
        batch = order.choice(512, BATCH, replace=False)
        logits = network(gs.Tensor(xp.asarray(pixels[train][batch])))
        targets = xp.asarray(labels[train][batch])
        loss = F.objective(logits, targets, mixture.balance_loss)  # CE_mean + L_B / B
        for p in params:
            p.grad = None
        loss.backward()
        with gs.no_grad():  # SGD with momentum: v <- 0.9 v + g, p <- p - lr v
            for i, p in enumerate(params):
                if p.grad is not None:  # (a component nobody selected gets no gradient)
                    g = p.grad.data
                    velocity[i] = g if velocity[i] is None else 0.9 * velocity[i] + g
                    p.data -= LR * velocity[i]
        losses.append(F.softmax_cross_entropy(logits, targets).item())  # the CE part, for the plot
        if (step + 1) % (STEPS // 3) == 0:  # three "epochs"
            usage.append(gs.to_cpu(mixture.usage_counts).copy())  # host memory, kept after the reset
            mixture.reset_usage()
    for module in modules:
        module.eval()  # no gating noise, BN running statistics
    with gs.no_grad():
        predicted = gs.to_cpu(network(gs.Tensor(xp.asarray(pixels[val]))).data).argmax(axis=1)
    return np.array(usage), losses, float(np.mean(predicted != labels[val]))


runs = {alpha: train_mixture(alpha) for alpha in (0.0, 100.0)}


def usage_cv(counts):
    return float(np.std(counts) / np.mean(counts))


def top_k_share(counts):
    """Share of the selections that went to the K most used components (uniform: K / N)."""
    return float(np.sort(counts)[::-1][:K].sum() / np.sum(counts))


for alpha, (usage, losses, error) in runs.items():
    print(
        f"alpha = {alpha:5}: CE {np.mean(losses[:5]):.3f} -> {np.mean(losses[-10:]):.3f}, validation error "
        f"{100 * error:.1f}% (chance 75%); last-epoch usage {usage[-1]}, CV {usage_cv(usage[-1]):.2f}, "
        f"top-{K} share {100 * top_k_share(usage[-1]):.0f}% (uniform {100 * K / N_COMPONENTS:.0f}%)"
    )

# %% [markdown]
# Both models learn. With α = 0 a few components take most of the images (the rich get richer:
# a component that is chosen more is trained more, so it is chosen more); with α = 100 every
# component receives about the same number. In a run this short α = 0 ends with the *lower* error:
# its few busy components see every image, while with α = 100 each component sees about K/N of them
# and is trained less. The paper's argument for the balance loss is about the end of a long training,
# when every component has had enough data; the experiment `gmsop experiment figure2` and the README
# section "Reproducing the paper at small scale" measure it on whole networks.

# %%
fig, axes = plt.subplots(1, 3, figsize=(14, 3.5))
for ax, (alpha, (usage, _, error)) in zip(axes[:2], runs.items()):
    share = usage[-1] / usage[-1].sum()
    ax.bar(np.arange(N_COMPONENTS), share)
    ax.axhline(1 / N_COMPONENTS, color="gray", ls="--", lw=0.8, label="uniform")
    ax.set_title(f"alpha = {alpha:g}: CV = {usage_cv(usage[-1]):.2f}, val error {100 * error:.0f}%")
    ax.set_xlabel("component")
    ax.set_ylim(0, 1)
axes[0].set_ylabel("share of the selections (last epoch)")
axes[0].legend()
for alpha, (_, losses, _) in runs.items():
    smooth = np.convolve(losses, np.ones(5) / 5, mode="valid")
    axes[2].plot(np.arange(len(smooth)) + 5, smooth, label=f"alpha = {alpha:g}")
axes[2].axhline(np.log(4), color="gray", ls=":", lw=0.8, label="chance, ln 4")
axes[2].set_xlabel("step")
axes[2].set_ylabel("cross-entropy (5-step mean)")
axes[2].legend()
fig.suptitle(f"GM-SOP-{N_COMPONENTS}-{K} on textures: component usage and training loss (paper Fig. 2 in miniature)")
fig.tight_layout()
fig.savefig(figure_dir / "04_usage_histograms.png")
plt.show()

# %% [markdown]
# ## Milestone checks

# %%
assert ((w > 0).sum(axis=1) == 3).all() and np.allclose(w.sum(axis=1), 1.0)
assert np.all(unselected_grad == 0.0), "unselected logits get exactly zero gradient"
assert np.isclose(F.balance_loss(gs.Tensor(xp.asarray(w))).item(), balance_oracle(w))
assert np.isclose(worst_cv2, N / K - 1) and F.balance_loss(gs.Tensor(xp.asarray(balanced))).item() < 1e-12
usage0, usage100 = runs[0.0][0][-1], runs[100.0][0][-1]
assert usage0.sum() == usage100.sum() == (STEPS // 3) * BATCH * K, "each image is counted once per selected slot"
for alpha, (_, losses, error) in runs.items():  # both learn: CE falls clearly, error far below chance (75%)
    assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:5]), f"alpha = {alpha}: the cross-entropy did not fall"
    assert error < 0.75 / 2, f"alpha = {alpha}: validation error {error:.2f} is not far below chance"
assert usage_cv(usage0) > 0.6, "without the balance loss a few components take most samples"
assert usage_cv(usage100) < 0.25, "with alpha = 100 the usage is near uniform"
for name in ["04_topk_weights.png", "04_usage_histograms.png"]:
    assert (figure_dir / name).stat().st_size > 0
print("all checks passed")
