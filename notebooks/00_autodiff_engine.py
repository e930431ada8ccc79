# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 00 — The autodiff engine
#
# How `gmsop_np` computes gradients: a graph recorded during the forward pass, a backward
# pass in reverse topological order found from *generation numbers*, gradient accumulation
# for tensors used twice, and a gradient check that catches a broken backward.
# The maths is in [`derivations/01_autodiff.md`](../derivations/01_autodiff.md); equation
# numbers below refer to it.
#
# In every notebook, each figure appears below the cell that draws it and is also saved as
# a PNG in `FIGURE_DIR` (the test suite runs the notebooks without a display and checks
# those files).

# %% tags=["parameters"]
BACKEND = "numpy"  # "cupy" runs the same cells on the GPU (falls back to NumPy without one)
SEED = 0
CHAIN_DEPTH = 12  # depth of the doubling chain in the "why order matters" plot
FIGURE_DIR = "figures"

# %%
from pathlib import Path

import matplotlib.pyplot as plt  # each figure: saved to FIGURE_DIR, then plt.show() draws it inline
import numpy as np

import gmsop_np as gs
import gmsop_np.functional as F

if BACKEND == "cupy" and not gs.cupy_available():
    print("BACKEND='cupy' was asked for, but CuPy with a CUDA GPU is not available here: using NumPy.")
    BACKEND = "numpy"
xp = gs.backend.array_module(BACKEND)  # numpy, or cupy on a GPU
figure_dir = Path(FIGURE_DIR)
figure_dir.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(SEED)
print("backend:", BACKEND, "| figures are saved to", figure_dir.resolve())

# %% [markdown]
# ## 1. A graph is recorded while the forward pass runs
#
# Every operation is a `Function`; each output `Tensor` remembers its `creator`, and each
# Function remembers its `inputs` and its `generation` (eq. 4): the largest generation of its
# inputs. Leaves (data, parameters) have generation 0.

# %%
x = gs.Tensor(xp.asarray(rng.standard_normal((2, 3))), requires_grad=True, name="x")
w = gs.Tensor(xp.asarray(rng.standard_normal((3, 2))), requires_grad=True, name="w")
h = x @ w  # MatMul
y = F.exp(h)  # Exp
loss = F.sum(y * y) / 2 + F.sum(h)  # Mul, Sum, Div (2 becomes a constant leaf), Sum, Add
for name, t in [("x", x), ("w", w), ("h", h), ("y", y), ("loss", loss)]:
    creator = t.creator.name if t.creator else "(leaf)"
    print(f"{name:>5}: shape {str(t.shape):7} generation {t.generation}  created by {creator}")


# %%
def functions_of(output):
    """Every Function in the graph that produced ``output`` (a plain graph walk, for display)."""
    seen, stack, found = set(), [output.creator], []
    while stack:
        f = stack.pop()
        if f is None or id(f) in seen:
            continue
        seen.add(id(f))
        found.append(f)
        stack.extend(x.creator for x in f.inputs)
    return found


graph = sorted(functions_of(loss), key=lambda f: f.generation)
for f in graph:
    print(f"generation {f.generation}: {f.name:6} inputs {[tuple(x.shape) for x in f.inputs]}")


# %%
def draw_graph(functions):
    """A figure of the Functions as boxes placed by generation (left to right), arrows input -> output."""
    fig, ax = plt.subplots(figsize=(8, 3))
    rows = {}
    position = {}
    for f in functions:
        row = rows.get(f.generation, 0)
        rows[f.generation] = row + 1
        position[id(f)] = (f.generation, -row)
        ax.text(f.generation, -row, f.name, ha="center", va="center", bbox=dict(boxstyle="round", fc="lightyellow"))
    for f in functions:
        for x in f.inputs:
            if x.creator is not None and id(x.creator) in position:
                (x0, y0), (x1, y1) = position[id(x.creator)], position[id(f)]
                bend = -0.35 if x1 - x0 > 1 else 0.0  # long edges arc over the boxes
                ax.annotate(
                    "",
                    xy=(x1 - 0.25, y1),
                    xytext=(x0 + 0.25, y0),
                    arrowprops=dict(arrowstyle="->", connectionstyle=f"arc3,rad={bend}"),
                )
    ax.set_xlim(-0.6, max(rows) + 0.6)
    ax.set_ylim(-max(rows.values()) + 0.4, 1.2)
    ax.set_xlabel("generation (eq. 4)")
    ax.set_yticks([])
    ax.set_title("the recorded graph of loss = sum(exp(h)^2) / 2 + sum(h),  h = x @ w")
    fig.tight_layout()
    return fig


fig = draw_graph(graph)
fig.savefig(figure_dir / "00_graph.png")
plt.show()

# %% [markdown]
# ## 2. Backward, and the order in which Functions run
#
# `loss.backward()` pops Functions from a heap, highest generation first. We record the
# order by wrapping the engine's per-Function entry point for one call (instrumentation only;
# the engine is unchanged).

# %%
order = []
original_run_backward = gs.Function._run_backward


def recording_run_backward(self, gys, create_graph):
    order.append((self.generation, self.name))
    return original_run_backward(self, gys, create_graph)


gs.Function._run_backward = recording_run_backward
try:
    loss.backward()
finally:
    gs.Function._run_backward = original_run_backward
for generation, name in order:
    print(f"backward of {name:6} (generation {generation})")
generations_in_order = [g for g, _ in order]

# %% [markdown]
# `h` has two consumers (`Exp` and the second `Sum`), so `MatMul` runs last, after both
# contributions arrived. By hand: $\bar y = y$, $\bar h = y \odot y + 1$ (eqs. 13, 18 and 3),
# $\bar x = \bar h\, w^\top$ and $\bar w = x^\top \bar h$ (eq. 17).

# %%
h_np, y_np = gs.to_cpu(h.data), gs.to_cpu(y.data)
x_np, w_np = gs.to_cpu(x.data), gs.to_cpu(w.data)
gh = y_np * y_np + 1
print("x.grad from the engine:\n", x.grad.numpy())
print("x.grad by hand:\n", gh @ w_np.T)
assert np.allclose(x.grad.numpy(), gh @ w_np.T) and np.allclose(w.grad.numpy(), x_np.T @ gh)

# %% [markdown]
# ## 3. A reused node: `b = a + a`, `c = b + b`
#
# $c = 4a$, so $\bar a = 4$. Both operands of each `Add` are the same tensor, so its
# gradient is the *sum* of two contributions (eq. 3), and the first `Add` may only run once
# `b` has received both. Below, the engine next to a toy recursive backward that propagates
# every contribution as soon as it arrives and *assigns* leaf gradients (the classic bugs).

# %%
a = gs.Tensor(xp.asarray(3.0), requires_grad=True)
b = a + a
c = b + b
c.backward()
print("engine: dc/da =", a.grad.item())


def toy_backward(t, g, leaf_grads, accumulate, calls):
    """Toy: recurse into the creator for every incoming contribution (no ordering)."""
    f = t.creator
    if f is None:
        leaf_grads[id(t)] = leaf_grads.get(id(t), 0.0) + g if accumulate else g
        return
    calls.append(f.name)
    for x, gx in zip(f.inputs, f.backward(gs.Tensor(xp.asarray(g)))):
        toy_backward(x, gx.item(), leaf_grads, accumulate, calls)


for accumulate in (False, True):
    grads, calls = {}, []
    toy_backward(c, 1.0, grads, accumulate, calls)
    print(
        f"toy, {'adds' if accumulate else 'assigns'} leaf grads: dc/da = {grads[id(a)]}, "
        f"{len(calls)} Function backward calls (the engine: 2)"
    )

# %% [markdown]
# Accumulating fixes the value, but recursing per contribution repeats whole sub-graphs.
# For a chain of doublings $b_{k+1} = b_k + b_k$ the toy makes $2^n - 1$ backward calls; the
# engine, waiting for all contributions (generation order), makes $n$.

# %%
depths, toy_calls, engine_calls = list(range(1, CHAIN_DEPTH + 1)), [], []
for n in depths:
    leaf = gs.Tensor(xp.asarray(1.0), requires_grad=True)
    t = leaf
    for _ in range(n):
        t = t + t
    calls = []
    toy_backward(t, 1.0, {}, True, calls)
    toy_calls.append(len(calls))
    engine_calls.append(len(functions_of(t)))  # the engine runs each Function exactly once
    t.backward()
    assert leaf.grad.item() == 2.0**n
fig, ax = plt.subplots(figsize=(5, 3.5))
ax.semilogy(depths, toy_calls, "o-", label="toy: recurse per contribution")
ax.semilogy(depths, engine_calls, "s-", label="engine: generation order")
ax.set_xlabel("chain depth n  (b = b + b, n times)")
ax.set_ylabel("Function backward calls")
ax.legend()
fig.tight_layout()
fig.savefig(figure_dir / "00_reuse_calls.png")
plt.show()
print("depth", depths[-1], ": toy", toy_calls[-1], "calls, engine", engine_calls[-1])

# %% [markdown]
# Leaf gradients also accumulate *across* backward calls — that is why training loops call
# `zero_grad()` before each step.

# %%
c.backward()
print("after a second backward without zero_grad: a.grad =", a.grad.item())
a.zero_grad()
c.backward()
print("after zero_grad and backward:               a.grad =", a.grad.item())

# %% [markdown]
# ## 4. Broadcasting and its adjoint (eq. 5)
#
# A bias of shape `(3,)` added to a batch of shape `(4, 3)` is copied along the batch axis;
# its gradient is summed back along that axis.

# %%
batch = gs.Tensor(xp.asarray(rng.standard_normal((4, 3))))
bias = gs.Tensor(xp.zeros(3), requires_grad=True)
out = batch + bias
out.backward(xp.ones((4, 3)))
print("bias.grad =", bias.grad.numpy(), "(each entry was copied to 4 rows)")

# %% [markdown]
# ## 5. Gradient checks: why the upstream gradient must be random (eqs. 28–29)
#
# A softmax built from core ops is correct by construction. Next to it, a hand-written
# `Softmax` Function with a correct backward, and a broken one whose backward returns zeros.


# %%
def softmax_from_ops(x):
    e = F.exp(x - F.max(x, axis=-1, keepdims=True))
    return e / F.sum(e, axis=-1, keepdims=True)


class Softmax(gs.Function):
    """y = softmax(x) over the last axis; VJP: gx = y * (gy - sum(gy * y))."""

    def forward(self, x):
        xp = gs.get_array_module(x)
        e = xp.exp(x - x.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    def backward(self, gy):
        y = self.output()
        return y * (gy - F.sum(gy * y, axis=-1, keepdims=True))


class BrokenSoftmax(Softmax):
    """The same forward, but a backward that returns zeros."""

    def backward(self, gy):
        return gy * 0.0


logits = xp.asarray(rng.standard_normal((2, 4)))


def sum_of_outputs_check(fn, x, eps=1e-6):
    """The weak check: compare backward with u = 1 against finite differences of sum(f(x))."""
    t = gs.Tensor(x, requires_grad=True)
    F.sum(fn(t)).backward()
    analytic = t.grad.numpy()
    numeric = np.zeros(x.shape)
    for i in np.ndindex(*x.shape):
        step = xp.zeros(x.shape)
        step[i] = eps
        numeric[i] = (F.sum(fn(gs.Tensor(x + step))).item() - F.sum(fn(gs.Tensor(x - step))).item()) / (2 * eps)
    return np.allclose(analytic, numeric, atol=1e-7)


results = {}
for name, fn in [
    ("from ops", softmax_from_ops),
    ("hand-written", lambda t: Softmax()(t)),
    ("broken (zeros)", lambda t: BrokenSoftmax()(t)),
]:
    weak = sum_of_outputs_check(fn, logits)
    try:
        gs.check_backward(fn, [logits])
        strong = "passes"
    except gs.GradientCheckError as err:
        strong = "FAILS: " + str(err)[:70] + "..."
    results[name] = (weak, strong)
    print(f"{name:15} sum-of-outputs check: {'passes' if weak else 'FAILS'} | check_backward: {strong}")

# %% [markdown]
# The picture behind it: with $u = \mathbf 1$ the true VJP of a softmax is exactly zero
# (eq. 29), so the broken backward "agrees". With a random $u$ it does not.

# %%
u = rng.standard_normal(logits.shape)
vjps = {}
for name, fn in [("hand-written", lambda t: Softmax()(t)), ("broken", lambda t: BrokenSoftmax()(t))]:
    for label, cot in [("u = 1", np.ones(logits.shape)), ("random u", u)]:
        t = gs.Tensor(logits, requires_grad=True)
        fn(t).backward(xp.asarray(cot))
        vjps[name, label] = t.grad.numpy().ravel()
fig, axes = plt.subplots(1, 2, figsize=(9, 3), sharey=True)
for ax, label in zip(axes, ["u = 1", "random u"]):
    positions = np.arange(logits.size)
    ax.bar(positions - 0.2, vjps["hand-written", label], width=0.4, label="correct backward")
    ax.bar(positions + 0.2, vjps["broken", label], width=0.4, label="backward returns zeros")
    ax.set_title(f"VJP J^T u of softmax, {label}")
    ax.set_xlabel("entry of x")
axes[0].legend()
fig.tight_layout()
fig.savefig(figure_dir / "00_softmax_check.png")
plt.show()
print("max |correct VJP| with u = 1:", np.abs(vjps["hand-written", "u = 1"]).max())

# %% [markdown]
# ## 6. Second derivatives
#
# Backwards written with differentiable ops can be differentiated again:
# with `create_graph=True` the gradient has a graph of its own.

# %%
s = gs.Tensor(xp.asarray(2.0), requires_grad=True)
cube = s**3
cube.backward(create_graph=True)
first = s.grad
s.zero_grad()
first.backward()
print(f"d(s^3)/ds = {first.item()} (3 s^2 = 12),  d2/ds2 = {s.grad.item()} (6 s = 12)")

# %% [markdown]
# ## Milestone checks

# %%
assert generations_in_order == sorted(generations_in_order, reverse=True), "backward must run by generation"
assert a.grad.item() == 4.0, "reused node: dc/da = 4"
assert toy_calls[-1] == 2**CHAIN_DEPTH - 1 and engine_calls[-1] == CHAIN_DEPTH
assert np.allclose(bias.grad.numpy(), 4.0), "broadcast adjoint: sum over the copied axis"
assert results["broken (zeros)"][0], "the weak sum-of-outputs check is fooled by the broken softmax"
assert results["broken (zeros)"][1].startswith("FAILS"), "check_backward must catch it"
assert results["from ops"][1] == "passes" and results["hand-written"][1] == "passes"
assert first.item() == 12.0 and s.grad.item() == 12.0
for name in ["00_graph.png", "00_reuse_calls.png", "00_softmax_check.png"]:
    assert (figure_dir / name).stat().st_size > 0
print("all checks passed")
