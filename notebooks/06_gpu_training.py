# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 06 — Training on the GPU
#
# The same training as notebook 05, with `backend="cupy"`: the model's parameters and
# buffers move to the GPU (`model.to_gpu()`), each batch is copied there once, and every
# forward/backward runs through CuPy with the same code. We compare throughput with NumPy
# and check that both backends compute the same gradients -- and, because dropout masks and
# gating noise come from counter-based generators that give the same numbers on both backends
# (`gmsop_np/random.py`), the same training run. Without a GPU every cell still runs: the GPU
# parts print why they were skipped and the comparison shows NumPy alone. (With
# `GMSOP_NP_SIMULATE_GPU=1` they run on the CPU stand-in for CuPy, which checks that data moves
# only explicitly; its "throughput" is the CPU's.)

# %% tags=["parameters"]
BACKEND = "numpy"  # the backend of the reference run; the GPU run always uses "cupy"
SEED = 0
HEAD = "gmsop"
EPOCHS = 1
TRAIN_SIZE = 512
VAL_SIZE = 128
IMAGE_SIZE = 32
BATCH = 64
FIGURE_DIR = "figures"

# %%
import shutil
from pathlib import Path

import matplotlib.pyplot as plt  # each figure: saved to FIGURE_DIR, then plt.show() draws it inline
import numpy as np

import gmsop_np as gs
import gmsop_np.functional as F
from gmsop_np.data import normalize
from gmsop_np.testing import simulating
from gmsop_np.train import TrainConfig, Trainer

HAS_GPU = gs.cupy_available()
if HAS_GPU:
    print("GPU: available -- the CuPy runs happen" + (" on the CPU stand-in for CuPy" if simulating() else ""))
else:
    print(
        "GPU: not available (CuPy missing or no CUDA device) -- the CuPy cells print this and skip.\n"
        "On a GPU machine: pip install -e '.[gpu-cuda12]' (or gpu-cuda13; README, section 'GPU') and re-run."
    )
figure_dir = Path(FIGURE_DIR)
figure_dir.mkdir(parents=True, exist_ok=True)
run_root = figure_dir / "06_runs"
shutil.rmtree(run_root, ignore_errors=True)

# %% [markdown]
# ## 1. One model, two backends: the same gradients
#
# The same weights (float64) on each backend and the same batch, in evaluation mode (no
# gating noise, no dropout), so the only differences left are rounding in the BLAS libraries.


# %%
def make_trainer(backend, name, dtype="float32"):
    config = TrainConfig(
        arch="tiny",
        head=HEAD,
        dataset="textures",
        train_size=TRAIN_SIZE,
        val_size=VAL_SIZE,
        image_size=IMAGE_SIZE,
        epochs=EPOCHS,
        batch_size=BATCH,
        seed=SEED,
        backend=backend,
        num_components=8,
        k=4,
        dtype=dtype,
        out=str(run_root / name),
        progress=False,
    )
    return Trainer(config)


reference = make_trainer("numpy", "parity", dtype="float64")
images, labels = reference.train_set.load(np.arange(8))
batch = normalize(images, reference.train_set.mean, reference.train_set.std, dtype=np.float64)


def gradients(model, to_device):
    """Gradients of CE on one batch, in evaluation mode (no noise/dropout), as NumPy arrays."""
    model.zero_grad()
    model.eval()
    loss = F.softmax_cross_entropy(model(gs.Tensor(to_device(batch))), to_device(labels))
    model.train()
    loss.backward()
    return loss.item(), {n: gs.to_cpu(p.grad.data) for n, p in model.named_parameters() if p.grad is not None}


cpu_model = reference.model
loss_cpu, grads_cpu = gradients(cpu_model, lambda a: a)
print(f"NumPy: loss {loss_cpu:.10f}, {len(grads_cpu)} parameter gradients")
parity = None
if HAS_GPU:
    cpu_model.to_gpu()
    loss_gpu, grads_gpu = gradients(cpu_model, gs.to_gpu)
    cpu_model.to_cpu()
    parity = max(np.abs(grads_cpu[n] - grads_gpu[n]).max() / (np.abs(grads_cpu[n]).max() + 1e-30) for n in grads_cpu)
    print(f"CuPy:  loss {loss_gpu:.10f}; largest relative gradient difference {parity:.2e}")
else:
    print("CuPy:  skipped (no GPU).")

# %% [markdown]
# ## 2. Throughput: the same training run on both backends
#
# `Trainer(TrainConfig(backend="cupy"))` moves the model to the GPU; the loader's batches are
# copied there as they are used. Images per second over one epoch (the first epoch includes
# CuPy's one-off kernel compilation, so small runs understate the GPU).

# %%
throughput = {}
cpu_run = make_trainer("numpy", "numpy_run")
cpu_run.fit()
throughput["numpy"] = cpu_run.history[-1]["images_per_s"]
if HAS_GPU:
    gpu_run = make_trainer("cupy", "cupy_run")
    gpu_run.fit()
    throughput["cupy"] = gpu_run.history[-1]["images_per_s"]
else:
    print("CuPy training skipped: no GPU here.")
for name, value in throughput.items():
    print(f"{name:6} {value:8.0f} images/s")
if "cupy" in throughput:
    print(f"speed-up: {throughput['cupy'] / throughput['numpy']:.1f}x" + (" (a CPU stand-in)" if simulating() else ""))
    losses = {name: run.history[-1]["train_loss"] for name, run in (("numpy", cpu_run), ("cupy", gpu_run))}
    print("training loss of the epoch, the same masks and noise on both:", losses)

fig, ax = plt.subplots(figsize=(4.5, 3.2))
ax.bar(list(throughput), list(throughput.values()), color=["tab:blue", "tab:green"][: len(throughput)])
ax.set_ylabel("training images / s")
ax.set_title(f"tiny ResNet + {HEAD}, batch {BATCH}" + ("" if HAS_GPU else "\n(no GPU here: NumPy only)"))
fig.tight_layout()
fig.savefig(figure_dir / "06_throughput.png")
plt.show()

# %% [markdown]
# ## Milestone checks

# %%
assert np.isfinite(loss_cpu) and grads_cpu
assert np.isfinite(cpu_run.history[-1]["train_loss"]) and throughput["numpy"] > 0
if HAS_GPU:
    assert abs(loss_gpu - loss_cpu) < 1e-8 * max(1.0, abs(loss_cpu))
    assert parity < 1e-6, f"NumPy and CuPy gradients differ by {parity:.2e}"
    assert np.isfinite(gpu_run.history[-1]["train_loss"]) and throughput["cupy"] > 0
    assert abs(losses["cupy"] - losses["numpy"]) < 1e-3 * abs(losses["numpy"]), "one run, two backends"
else:
    assert parity is None and set(throughput) == {"numpy"}
assert (figure_dir / "06_throughput.png").stat().st_size > 0
print("all checks passed")
