"""Gradient checking: the engine's backward against central differences.

The check always uses a *random* upstream gradient (cotangent) ``u``: it
compares the vector-Jacobian product ``J^T u`` from backward with the finite
difference of the scalar ``<u, f(x)>``. Checking only ``sum(f(x))`` (``u = 1``)
is not enough: for a softmax, ``sum(softmax(x)) = 1`` for every x, so a backward
that returns zeros would pass. (tests/test_gradcheck.py proves the difference.)

Two modes:

* ``"elementwise"``: perturb every input entry, compare every gradient entry
  (small inputs; the failure message names the worst entry).
* ``"directional"``: pick random directions ``v`` and compare
  ``<J^T u, v>`` with ``(<u, f(x + eps v)> - <u, f(x - eps v)>) / (2 eps)``
  (large inputs; cost independent of the input size).

Central differences have error O(eps^2) from the third derivative and
O(precision/eps) from rounding; with float64 and eps = 1e-6 both are ~1e-10
relative, so checks run in float64 and refuse float32 inputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .backend import get_array_module, to_cpu
from .config import no_grad
from .core import Tensor, backward

__all__ = ["check_backward", "GradientCheckError", "numerical_vjp"]


class GradientCheckError(AssertionError):
    """Raised when the analytic and numeric gradients disagree."""


@dataclass
class _Worst:
    input_index: int
    position: tuple
    analytic: float
    numeric: float

    def describe(self) -> str:
        return (
            f"input {self.input_index}, element {self.position}: analytic {self.analytic:.10g}, "
            f"numeric {self.numeric:.10g}, difference {abs(self.analytic - self.numeric):.3g}"
        )


def _outputs_tuple(y):
    return tuple(y) if isinstance(y, (tuple, list)) else (y,)


def _prepare_inputs(inputs):
    """float inputs -> float64 leaf Tensors requiring grad; others pass through."""
    prepared, float_indices = [], []
    for i, x in enumerate(inputs):
        data = x.data if isinstance(x, Tensor) else x
        if not hasattr(data, "dtype") or data.dtype.kind != "f":
            prepared.append(x)
            continue
        if data.dtype != np.float64:
            raise TypeError(
                f"check_backward needs float64 inputs (input {i} is {data.dtype}): central differences "
                "in float32 are too noisy to tell a wrong gradient from rounding"
            )
        prepared.append(Tensor(data.copy(), requires_grad=True))
        float_indices.append(i)
    return prepared, float_indices


def _pairing(outputs, cotangents):
    """<u, y> summed over all outputs, as a Python float (no graph)."""
    xp = get_array_module(*outputs)
    return float(sum(xp.vdot(u, y.data).item() for u, y in zip(cotangents, outputs)))


def numerical_vjp(fn, tensors, index, cotangents, direction, eps):
    """(<u, f(x + eps v)> - <u, f(x - eps v)>) / (2 eps) with v added to input ``index``."""
    x = tensors[index]
    original = x.data.copy()
    values = []
    with no_grad():
        for sign in (1.0, -1.0):
            x.data = original + sign * eps * direction
            values.append(_pairing(_outputs_tuple(fn(*tensors)), cotangents))
    x.data = original
    return (values[0] - values[1]) / (2 * eps)


def _close(analytic, numeric, atol, rtol):
    return abs(analytic - numeric) <= atol + rtol * abs(numeric)


def check_backward(
    fn, inputs, *, eps=1e-6, atol=1e-7, rtol=1e-5, mode="auto", num_directions=4, seed=0, max_elementwise=200
):
    """Check ``fn``'s backward against central differences with a random cotangent.

    Parameters
    ----------
    fn : callable taking Tensors, returning a Tensor or a tuple of Tensors.
        It must be deterministic (fix dropout masks / gating noise by seed).
    inputs : arrays or Tensors. Floating ones (float64 required) are checked;
        integer ones (labels, indices) are passed through unchanged.
    mode : "elementwise", "directional" or "auto" (elementwise when the checked
        inputs have at most ``max_elementwise`` entries in total).

    Returns the analytic gradients (NumPy arrays, one per checked input).
    Raises ``GradientCheckError`` naming the worst entry when a check fails.

    >>> import numpy as np
    >>> import gmsop_np.functional as F
    >>> (grad,) = check_backward(lambda a: F.exp(a) * a, [np.linspace(-1.0, 1.0, 5)])
    >>> grad.shape
    (5,)
    """
    rng = np.random.default_rng(seed)
    tensors, checked = _prepare_inputs(inputs)
    if not checked:
        raise ValueError("check_backward found no floating-point input to check")

    outputs = _outputs_tuple(fn(*tensors))
    xp = get_array_module(*outputs)
    cotangents = [xp.asarray(rng.standard_normal(y.shape)) for y in outputs]
    differentiable = [(y, u) for y, u in zip(outputs, cotangents) if y.requires_grad]
    if not differentiable:
        raise GradientCheckError("the function's outputs do not depend on any checked input")
    backward([y for y, _ in differentiable], [u for _, u in differentiable])
    analytic = {
        i: (tensors[i].grad.data if tensors[i].grad is not None else xp.zeros_like(tensors[i].data)) for i in checked
    }

    total = sum(tensors[i].size for i in checked)
    if mode == "auto":
        mode = "elementwise" if total <= max_elementwise else "directional"
    if mode == "elementwise":
        _check_elementwise(fn, tensors, checked, analytic, cotangents, eps, atol, rtol)
    elif mode == "directional":
        _check_directional(fn, tensors, checked, analytic, cotangents, eps, atol, rtol, rng, num_directions)
    else:
        raise ValueError(f"unknown mode {mode!r}; use 'elementwise', 'directional' or 'auto'")
    return [to_cpu(analytic[i]) for i in checked]


def _check_elementwise(fn, tensors, checked, analytic, cotangents, eps, atol, rtol):
    worst, worst_excess = None, 0.0
    for i in checked:
        x = tensors[i]
        xp = get_array_module(x)
        grad = to_cpu(analytic[i])
        for position in np.ndindex(*x.shape):
            direction = xp.zeros_like(x.data)
            direction[position] = 1.0
            numeric = numerical_vjp(fn, tensors, i, cotangents, direction, eps)
            a = float(grad[position])
            excess = abs(a - numeric) - (atol + rtol * abs(numeric))
            if excess > worst_excess:
                worst, worst_excess = _Worst(i, position, a, numeric), excess
    if worst is not None:
        raise GradientCheckError("backward disagrees with central differences; worst at " + worst.describe())


def _check_directional(fn, tensors, checked, analytic, cotangents, eps, atol, rtol, rng, num_directions):
    for trial in range(num_directions):
        for i in checked:
            x = tensors[i]
            xp = get_array_module(x)
            direction = xp.asarray(rng.standard_normal(x.shape))
            numeric = numerical_vjp(fn, tensors, i, cotangents, direction, eps)
            a = float(xp.vdot(analytic[i], direction).item())
            if not _close(a, numeric, atol, rtol):
                raise GradientCheckError(
                    f"backward disagrees with central differences along random direction {trial} "
                    f"of input {i} (shape {x.shape}): analytic <g, v> = {a:.10g}, numeric {numeric:.10g}, "
                    f"difference {abs(a - numeric):.3g}"
                )
