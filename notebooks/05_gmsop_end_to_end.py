# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 — GM-SOP end to end on `textures`
#
# Everything together: a small ResNet backbone with three heads — GAP (first-order),
# SR-SOP (one covariance square root) and GM-SOP (a gated mixture of parametric SR-SOPs) —
# trained on the built-in `textures` data set with the training application
# (`gmsop_np.train`: SGD with momentum, the paper's step schedule, objective
# `CE_mean + L_B / B`). The four classes differ only in how colour channels co-vary
# (notebook 03), which a second-order head reads directly.

# %% tags=["parameters"]
BACKEND = "numpy"  # "cupy" trains on the GPU (falls back to NumPy without one)
SEED = 0
HEADS = ["gap", "srsop", "gmsop"]
EPOCHS = 5  # the same budget as `gmsop train` (a few minutes for all three heads on 2 cores)
TRAIN_SIZE = 3000
VAL_SIZE = 1000
IMAGE_SIZE = 32
BATCH = 32
N_COMPONENTS = 16  # GM-SOP-N-K as in the paper
K = 8
EXPECT_LEARNING = True  # assert SR-SOP/GM-SOP < 50% error and GM-SOP < GAP (off for the tiny CI sizes)
FIGURE_DIR = "figures"

# %%
import shutil
from pathlib import Path

import matplotlib.pyplot as plt  # each figure: saved to FIGURE_DIR, then plt.show() draws it inline
import numpy as np
from matplotlib.ticker import MaxNLocator

import gmsop_np as gs
from gmsop_np.data import normalize
from gmsop_np.train import TrainConfig, Trainer

if BACKEND == "cupy" and not gs.cupy_available():
    print("BACKEND='cupy' was asked for, but CuPy with a CUDA GPU is not available here: using NumPy.")
    BACKEND = "numpy"
figure_dir = Path(FIGURE_DIR)
figure_dir.mkdir(parents=True, exist_ok=True)
run_root = figure_dir / "05_runs"
shutil.rmtree(run_root, ignore_errors=True)  # a fresh run directory per execution

# %% [markdown]
# ## 1. The configurations
#
# `arch="tiny"`: one basic block per stage (widths 8/16/32/32) and narrow heads, so the
# whole comparison runs on a laptop CPU. The paper's networks are `arch="resnet18"` etc.
# Each run writes `config.json`, `metrics.csv`, checkpoints and, for the mixture head,
# `usage.csv` to its folder (`gmsop plot` draws them).


# %%
def config_for(head):
    return TrainConfig(
        arch="tiny",
        head=head,
        dataset="textures",
        train_size=TRAIN_SIZE,
        val_size=VAL_SIZE,
        image_size=IMAGE_SIZE,
        epochs=EPOCHS,
        batch_size=BATCH,
        seed=SEED,
        backend=BACKEND,
        num_components=N_COMPONENTS if head == "gmsop" else None,
        k=K if head == "gmsop" else None,
        out=str(run_root / head),
        progress=False,
    )


trainers = {head: Trainer(config_for(head)) for head in HEADS}
for head, trainer in trainers.items():
    print(
        f"{head:6} {trainer.model.num_parameters():>8,} parameters | lr {trainer.plan.lr} | "
        f"schedule {trainer.plan.schedule} | weight decay {trainer.plan.weight_decay}"
    )

# %% [markdown]
# ## 2. Training

# %%
summaries = {}
for head, trainer in trainers.items():
    print(f"--- {head}")
    summaries[head] = trainer.fit()

# %%
print(f"{'head':6} {'val top-1 error':>16} {'best':>6} {'images/s':>9}   (chance: 0.75)")
for head, trainer in trainers.items():
    last = trainer.history[-1]
    print(f"{head:6} {last['val_top1']:>16.3f} {summaries[head]['best_val_top1']:>6.3f} {last['images_per_s']:>9.0f}")

fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
for head, trainer in trainers.items():
    epochs = [r["epoch"] for r in trainer.history]
    axes[0].plot(epochs, [r["train_loss"] for r in trainer.history], "o-", label=head)
    axes[1].plot(epochs, [r["val_top1"] for r in trainer.history], "o-", label=head)
axes[1].axhline(0.75, color="gray", ls="--", lw=0.8, label="chance")
axes[0].set_title("training loss (CE; + L_B / B for GM-SOP)")
axes[0].set_ylabel("loss (nats per image)")
axes[1].set_title("validation top-1 error")
axes[1].set_ylabel("error (fraction of images)")
for ax in axes:
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs
    ax.legend()
fig.tight_layout()
fig.savefig(figure_dir / "05_training_curves.png")
plt.show()

# %% [markdown]
# ## 3. Which components did the images use? (paper Fig. 2)
#
# The trainer records, per epoch, how many training images each GM-SOP component received.

# %%
gm = trainers["gmsop"] if "gmsop" in trainers else None
if gm is not None:
    usage = np.array([row[1:] for row in gm.usage_history])
    print("usage per epoch (rows: epochs, columns: components):\n", usage)
    print("usage CV per epoch:", [round(r["usage_cv"], 3) for r in gm.history])
    fig, ax = plt.subplots(figsize=(6, 3))
    image = ax.imshow(usage / usage.sum(axis=1, keepdims=True), aspect="auto", cmap="viridis")
    ax.set_xlabel("component i (column component_i of usage.csv)")
    ax.set_ylabel("epoch")
    ax.set_yticks(range(len(usage)), [str(r[0]) for r in gm.usage_history])
    ax.set_title(f"GM-SOP-{N_COMPONENTS}-{K}: which components the images selected")
    fig.colorbar(image, ax=ax, label="share of the epoch's\nimage-component selections")
    fig.tight_layout()
    fig.savefig(figure_dir / "05_component_usage.png")
    plt.show()

# %% [markdown]
# ## 4. Using a trained model
#
# Switch to evaluation mode (running BN statistics, no dropout, no gating noise), normalise
# a few validation images as the loader does, and classify them.

# %%
trainer = trainers[HEADS[-1]]
model = trainer.model
model.eval()
images, labels = trainer.val_set.load(np.arange(8))
batch = normalize(images, trainer.val_set.mean, trainer.val_set.std)  # float32, host
with gs.no_grad():
    logits = model(gs.Tensor(gs.to_gpu(batch) if BACKEND == "cupy" else batch))
predicted = gs.to_cpu(logits.data).argmax(axis=1)
print("labels   :", labels)
print("predicted:", predicted)

# %% [markdown]
# ## Milestone checks

# %%
for head, trainer in trainers.items():
    assert len(trainer.history) == EPOCHS
    assert all(np.isfinite(r["train_loss"]) and np.isfinite(r["val_loss"]) for r in trainer.history)
    assert (run_root / head / "metrics.csv").is_file() and (run_root / head / "last.npz").is_file()
if gm is not None:
    images_per_epoch = (TRAIN_SIZE // BATCH) * BATCH
    assert (usage.sum(axis=1) == images_per_epoch * K).all(), "each image counted once per selected slot"
if EXPECT_LEARNING:
    errors = {head: min(r["val_top1"] for r in t.history) for head, t in trainers.items()}
    assert errors["gmsop"] < 0.5 and errors["srsop"] < 0.5, errors
    assert errors["gmsop"] < errors["gap"], f"second-order beats GAP on textures: {errors}"
for name in ["05_training_curves.png", "05_component_usage.png"]:
    assert (figure_dir / name).stat().st_size > 0
print("all checks passed")
