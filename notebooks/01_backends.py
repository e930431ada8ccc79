# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 01 — Backends: NumPy on the CPU, CuPy on the GPU
#
# Every `forward`/`backward` in `gmsop_np` starts with `xp = get_array_module(...)` and then
# calls `xp.matmul`, `xp.exp`, ... — so one code path runs on NumPy arrays (host memory) and
# on CuPy arrays (GPU memory). Data never moves behind your back: mixing the two is an error
# that says how to move it. Without a GPU, every cell still runs; the GPU parts print why
# they were skipped. (With `GMSOP_NP_SIMULATE_GPU=1` in the environment, the GPU parts run on
# `gmsop_np.testing.device_sim`, a strict CPU stand-in for CuPy: it checks that the code
# moves data only explicitly -- not speed.)

# %% tags=["parameters"]
BACKEND = "numpy"  # the backend of the `using_backend` block in section 1 ("numpy" or "cupy")
SEED = 0
SIZES = [64, 128, 256, 512]  # matrix sizes for the throughput plot
REPEATS = 3
FIGURE_DIR = "figures"

# %%
import time
from pathlib import Path

import matplotlib.pyplot as plt  # each figure: saved to FIGURE_DIR, then plt.show() draws it inline
import numpy as np

import gmsop_np as gs
import gmsop_np.functional as F
from gmsop_np.testing import simulating

HAS_GPU = gs.cupy_available()
if HAS_GPU and simulating():
    print("The CPU stand-in for CuPy is active (GMSOP_NP_SIMULATE_GPU=1): the GPU cells run on the CPU.")
elif HAS_GPU:
    print("CuPy and a CUDA GPU are available: the GPU cells run.")
else:
    print(
        "No GPU here (CuPy missing or no CUDA device): GPU cells print a message instead of running.\n"
        "On a GPU machine: pip install -e '.[gpu-cuda12]' (or gpu-cuda13; README, section 'GPU') and re-run."
    )
if BACKEND == "cupy" and not HAS_GPU:
    print("BACKEND='cupy' was asked for: falling back to NumPy.")
    BACKEND = "numpy"
figure_dir = Path(FIGURE_DIR)
figure_dir.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(SEED)

# %% [markdown]
# ## 1. Where does data live?
#
# `get_array_module` returns the module of its arguments; Python numbers are neutral.
# New data from Python lists follows the default backend and is float32 (what training
# uses); NumPy arrays keep their dtype (gradient checks use float64). The default backend
# is NumPy; `with gs.using_backend("cupy"):` changes it for the data made inside the block
# only (there is no global switch).

# %%
t32 = gs.Tensor([[1.0, 2.0], [3.0, 4.0]])
t64 = gs.Tensor(np.eye(2))
print("default backend:", gs.get_backend())
print("Tensor from a list:", t32.backend, t32.dtype, "| from a float64 NumPy array:", t64.backend, t64.dtype)
print("get_array_module(t32, 2.0) ->", gs.get_array_module(t32, 2.0).__name__)
with gs.using_backend(BACKEND):  # BACKEND from the parameter cell
    t_block = gs.Tensor([1.0, 2.0])
print(f"inside using_backend({BACKEND!r}) a Tensor from a list lives on {t_block.backend};", end=" ")
print("after the block the default is", gs.get_backend(), "again")


# %% [markdown]
# ## 2. The same computation on both backends
#
# A small two-layer computation and its gradients. On the GPU the inputs are moved with
# `gs.to_gpu`, the very same code runs, and the results are moved back with `gs.to_cpu`.


# %%
def compute(x, w1, w2):
    """loss = mean(sqrt(1 + (exp(-|x w1|) w2)^2)): any differentiable chain would do."""
    h = F.exp(-F.abs(x @ w1))  # (B, H)
    out = F.sqrt(1.0 + (h @ w2) ** 2)  # (B, K)
    return F.mean(out)


x_host = rng.standard_normal((16, 8))
w1_host = rng.standard_normal((8, 32)) / np.sqrt(8)
w2_host = rng.standard_normal((32, 4)) / np.sqrt(32)


def run(to_backend):
    tensors = [gs.Tensor(to_backend(a), requires_grad=True) for a in (x_host, w1_host, w2_host)]
    loss = compute(*tensors)
    loss.backward()
    return loss.item(), [gs.to_cpu(t.grad.data) for t in tensors], tensors[0].backend


loss_cpu, grads_cpu, where_cpu = run(lambda a: a)
print(f"NumPy: loss = {loss_cpu:.12f}, computed on {where_cpu}")
if HAS_GPU:
    loss_gpu, grads_gpu, where_gpu = run(gs.to_gpu)
    print(f"CuPy:  loss = {loss_gpu:.12f}, computed on {where_gpu}")
    print("largest gradient difference:", max(np.abs(a - b).max() for a, b in zip(grads_cpu, grads_gpu)))
else:
    print("CuPy:  skipped (no GPU).")

# %% [markdown]
# ## 3. Moving data, and what happens when you mix
#
# `gs.to_gpu(x)` / `gs.to_cpu(x)` copy arrays and Tensors (a Tensor copy is a new leaf);
# `module.to_gpu()` moves a model's parameters in place (notebook 06). Mixing a host and a
# device array in one operation raises a `TypeError` that names the fix; asking for the
# `cupy` backend without a GPU raises a `RuntimeError` that says what to install.

# %%
mixing_error = None
if HAS_GPU:
    on_gpu = gs.to_gpu(gs.Tensor(x_host))
    back = gs.to_cpu(on_gpu)
    print("round trip:", on_gpu.backend, "->", back.backend, "| equal:", np.array_equal(back.numpy(), x_host))
    try:
        on_gpu + gs.Tensor(x_host)
    except TypeError as err:
        mixing_error = err
        print("mixing NumPy and CuPy ->", type(err).__name__ + ":", err)
else:
    try:
        with gs.using_backend("cupy"):
            pass
    except RuntimeError as err:
        mixing_error = err
        print("using_backend('cupy') without a GPU ->", type(err).__name__ + ":\n ", err)

# %% [markdown]
# ## 4. Writing backend-agnostic code
#
# Inside a Function, never call `np.` directly (a NumPy function given a CuPy array either
# fails or silently copies to the host). Ask the data for its module instead. A test
# (`tests/test_static_backend.py`) enforces this in `gmsop_np/functions/` and `gmsop_np/nn/`.


# %%
class Softsign(gs.Function):
    """y = x / (1 + |x|); VJP: gx = gy / (1 + |x|)^2. Runs on NumPy and CuPy unchanged."""

    def forward(self, x):
        xp = gs.get_array_module(x)  # numpy or cupy, whichever x lives on
        self.denominator = 1 + xp.abs(x)
        return x / self.denominator

    def backward(self, gy):
        return gy / gs.Tensor(self.denominator**2)


probe = rng.standard_normal((3, 4))
gs.check_backward(lambda t: Softsign()(t), [probe])
print("Softsign passes check_backward on NumPy")
if HAS_GPU:
    gs.check_backward(lambda t: Softsign()(t), [gs.to_gpu(probe)])
    print("... and on CuPy")

# %% [markdown]
# ## 5. Throughput of a matrix product
#
# The GPU wins once arrays are large enough to keep it busy; at tiny sizes the launch
# overhead dominates. (Measured here with float32, best of a few repeats.)


# %%
def gflops(xp, n, synchronize):
    a = xp.asarray(rng.standard_normal((n, n)), dtype=xp.float32)
    b = xp.asarray(rng.standard_normal((n, n)), dtype=xp.float32)
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        _ = gs.Tensor(a) @ gs.Tensor(b)
        synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


throughput = {"numpy": [gflops(np, n, lambda: None) for n in SIZES]}
if HAS_GPU:
    cp = gs.backend.get_cupy()
    label = "cupy (CPU stand-in)" if simulating() else "cupy"
    throughput[label] = [gflops(cp, n, cp.cuda.Device().synchronize) for n in SIZES]
fig, ax = plt.subplots(figsize=(5, 3.5))
for name, values in throughput.items():
    ax.loglog(SIZES, values, "o-", label=name)
ax.set_xlabel("matrix size n (n x n @ n x n, float32)")
ax.set_ylabel("GFLOP/s")
ax.set_title("matmul throughput" + ("" if HAS_GPU else " (NumPy only: no GPU here)"))
ax.legend()
fig.tight_layout()
fig.savefig(figure_dir / "01_matmul_throughput.png")
plt.show()
for name, values in throughput.items():
    print(name, " ".join(f"n={n}: {v:.1f} GFLOP/s" for n, v in zip(SIZES, values)))

# %% [markdown]
# ## Milestone checks

# %%
assert t32.dtype == np.float32 and t64.dtype == np.float64
assert t_block.backend == BACKEND and gs.get_backend() == "numpy", "using_backend acts inside its block only"
assert where_cpu == "numpy" and np.isfinite(loss_cpu)
if HAS_GPU:
    assert where_gpu == "cupy"
    assert abs(loss_gpu - loss_cpu) < 1e-10
    assert all(np.allclose(a, b, atol=1e-10) for a, b in zip(grads_cpu, grads_gpu))
    assert isinstance(mixing_error, TypeError) and "to_gpu" in str(mixing_error)
else:
    assert isinstance(mixing_error, RuntimeError) and "GPU" in str(mixing_error)
    assert gs.get_backend() == "numpy", "a failed using_backend must leave the backend unchanged"
assert (figure_dir / "01_matmul_throughput.png").stat().st_size > 0
print("all checks passed")
