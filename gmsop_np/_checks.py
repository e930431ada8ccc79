"""Argument checks, in one place, and the policy for checks that must read array values.

Every public function validates its arguments with these helpers, so a bad
input gives the right exception class and a message that names the argument,
what was wrong and how to fix it: ``TypeError`` for a wrong type or dtype,
``ValueError`` for a wrong value or shape.

Two kinds of check, two policies:

* **Free checks** (types, dtypes, shapes, Python numbers) look only at metadata.
  They are always on.
* **Value checks** read the contents of an array. On a GPU every such read is a
  device->host synchronisation: the CPU waits until the GPU has finished
  everything queued before it, which stalls the pipeline. So:

  - ``check_index_range`` (labels, component indices: an out-of-range value
    would otherwise index out of bounds, or wrap around silently when negative)
    runs on host arrays always -- the read is free there -- and on device
    arrays only in debug mode;
  - ``check_finite``, ``check_nonnegative`` and ``check_nonnegative_trace``
    (the symptoms of a diverging run or of a bug upstream: a NaN, negative
    mixture weights, a "covariance" that is not one) run only in debug mode,
    on every backend. They are not domain errors of the function: gradient
    checks probe it on both sides of such boundaries. A NaN in training is caught where it is cheap: at
    the loss, which the trainer reads every ``--log-every`` steps.

  Debug mode: ``with gs.debug(): ...``, ``GMSOP_NP_DEBUG=1`` or ``gmsop train --debug``.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from .backend import get_array_module, is_device_array
from .config import Config

__all__ = [
    "check_int",
    "check_number",
    "check_choice",
    "check_int_pair",
    "check_float_dtype",
    "check_square_batch",
    "check_index_range",
    "check_nonnegative",
    "check_finite",
    "check_nonnegative_trace",
]


# ----- free checks -------------------------------------------------------------------------------
def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def check_int(value, name: str, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as an ``int``: a TypeError unless it is an integer (bools and floats are not),
    a ValueError unless ``minimum <= value <= maximum``."""
    if not _is_int(value):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be {_range_text(minimum, maximum)}, got {value}")
    return value


def check_number(
    value, name: str, minimum: float | None = None, maximum: float | None = None, *, above: bool = False
) -> float:
    """``value`` as a finite ``float`` with ``minimum <= value <= maximum`` (``above=True``:
    strictly greater than ``minimum``)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    value = float(value)
    too_low = minimum is not None and (value <= minimum if above else value < minimum)
    if not math.isfinite(value) or too_low or (maximum is not None and value > maximum):
        low = None if minimum is None else (f"> {minimum:g}" if above else f">= {minimum:g}")
        high = None if maximum is None else f"<= {maximum:g}"
        bounds = " and ".join(b for b in (low, high) if b) or "finite"
        raise ValueError(f"{name} must be a finite number {bounds}, got {value!r}")
    return value


def check_choice(value, name: str, choices) -> str:
    """``value`` if it is one of ``choices``, else a ValueError listing them."""
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; choose one of: {', '.join(map(str, choices))}")
    return value


def check_int_pair(value, name: str, minimum: int) -> tuple[int, int]:
    """An int or a pair of ints (each >= ``minimum``) -> a pair of ints (kernel sizes, strides, padding)."""
    pair = (value, value) if _is_int(value) else value
    if not isinstance(pair, (tuple, list)) or len(pair) != 2 or not all(_is_int(v) for v in pair):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return int(pair[0]), int(pair[1])


def check_float_dtype(x, name: str) -> None:
    """A TypeError unless ``x`` (array or Tensor) has a floating-point dtype."""
    if x.dtype.kind != "f":
        raise TypeError(
            f"{name} must be a floating-point array, got dtype {x.dtype}; convert it first, "
            "e.g. x.astype(numpy.float32)"
        )


def check_square_batch(a, name: str) -> None:
    """A TypeError unless ``a`` is floating point, a ValueError unless its shape is (B, d, d) with d >= 1."""
    check_float_dtype(a, name)
    if a.ndim != 3 or a.shape[1] != a.shape[2]:
        raise ValueError(
            f"{name} expects a batch of square matrices of shape (B, d, d), got shape {tuple(a.shape)}; "
            "a single matrix needs a batch axis: a.reshape(1, d, d)"
        )
    if a.shape[1] == 0:
        raise ValueError(f"{name} needs matrices of size d >= 1, got shape {tuple(a.shape)}")


def _range_text(minimum, maximum) -> str:
    if minimum is not None and maximum is not None:
        return f"between {minimum} and {maximum}"
    return f">= {minimum}" if minimum is not None else f"<= {maximum}"


# ----- value checks (see the policy in the module docstring) ----------------------------------------
def _values_readable(array) -> bool:
    """Value checks run on host arrays, and on device arrays only in debug mode."""
    return Config.debug or not is_device_array(array)


def check_index_range(array, high: int, name: str, hint: str = "") -> None:
    """A ValueError unless every entry of the integer ``array`` lies in ``0 .. high-1``."""
    if array.size == 0 or not _values_readable(array):
        return
    lo, hi = int(array.min()), int(array.max())
    if lo < 0 or hi >= high:
        bad = lo if lo < 0 else hi
        raise ValueError(f"{name} {bad} is out of range (must lie in 0..{high - 1}){'; ' + hint if hint else ''}")


def check_nonnegative(array, name: str, hint: str = "") -> None:
    """Debug mode only: a ValueError if the real ``array`` has a negative entry."""
    if array.size == 0 or not Config.debug:
        return
    lowest = float(array.min())
    if lowest < 0:
        raise ValueError(f"{name} must be >= 0, found {lowest:g}{'; ' + hint if hint else ''}")


def check_finite(array, name: str, hint: str = "") -> None:
    """Debug mode only: a ValueError if ``array`` holds NaN or infinite values."""
    if Config.debug and not bool(get_array_module(array).isfinite(array).all()):
        raise ValueError(f"{name} got NaN or infinite values{'; ' + hint if hint else ''}")


def check_nonnegative_trace(a, name: str, allow_zero: bool) -> None:
    """Debug mode only: a ValueError unless every matrix of the (B, d, d) batch ``a`` has trace >= 0
    (> 0 when ``allow_zero`` is False). A covariance has a non-negative trace."""
    if not Config.debug:
        return
    xp = get_array_module(a)
    trace = np.asarray(xp.trace(a, axis1=-2, axis2=-1).tolist())
    bad = np.flatnonzero(trace < 0 if allow_zero else trace <= 0)
    if bad.size:
        condition = "trace >= 0" if allow_zero else "trace > 0 (with eps = 0 a zero trace gives 0/0)"
        raise ValueError(
            f"{name} needs positive semi-definite matrices ({condition}); matrices {bad[:5].tolist()} of the "
            f"batch have trace {trace[bad[0]]:.3g}. Pass a covariance (F.cov_pool) here."
        )
