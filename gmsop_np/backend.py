"""Array backends: NumPy on the CPU, CuPy on an NVIDIA GPU.

Every forward/backward in gmsop_np starts with ``xp = get_array_module(...)``
and then calls ``xp.matmul``, ``xp.exp``, ... so the same code runs on both.

CuPy is optional: it is imported lazily, the first time something asks for it,
and the package works without it. Arrays never move between host and device
behind the user's back: mixing a NumPy and a CuPy array in one operation is a
``TypeError`` that says how to move the data (``to_gpu`` / ``to_cpu``).
"""

from __future__ import annotations

import contextlib
import threading

import numpy as np

__all__ = [
    "BACKENDS",
    "cupy_available",
    "get_cupy",
    "get_array_module",
    "is_array",
    "backend_of",
    "get_backend",
    "set_backend",
    "using_backend",
    "default_xp",
    "to_gpu",
    "to_cpu",
    "as_array",
    "scatter_add",
]

BACKENDS = ("numpy", "cupy")

_cupy = None  # the cupy module once imported
_cupy_error = None  # why importing it failed (kept for the error message)
_state = threading.local()
_default_backend = "numpy"


def _try_import_cupy():
    global _cupy, _cupy_error
    if _cupy is None and _cupy_error is None:
        try:
            import cupy  # noqa: PLC0415  (lazy on purpose: CuPy is optional)

            cupy.cuda.runtime.getDeviceCount()  # raises when there is no GPU
            _cupy = cupy
        except Exception as exc:  # ImportError, CUDARuntimeError, ...
            _cupy_error = exc
    return _cupy


def cupy_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    return _try_import_cupy() is not None


def get_cupy():
    """Return the cupy module, or raise a RuntimeError that says how to get it."""
    cp = _try_import_cupy()
    if cp is None:
        raise RuntimeError(
            "the 'cupy' backend needs CuPy and a CUDA GPU, which are not available "
            f"here ({type(_cupy_error).__name__}: {_cupy_error}). Install the GPU extra "
            "with `pip install 'gmsop_np[gpu]'` on a machine with an NVIDIA GPU, or "
            "use backend='numpy'."
        )
    return cp


def _is_cupy_array(a) -> bool:
    # Check the type's module instead of importing CuPy: cheap, and it works
    # whether or not CuPy was ever imported.
    return type(a).__module__.startswith("cupy")


def is_array(a) -> bool:
    """True for a NumPy or CuPy array (not for Tensors, scalars or lists)."""
    return isinstance(a, np.ndarray) or _is_cupy_array(a)


def backend_of(a) -> str:
    """'cupy' for a CuPy array, 'numpy' for anything else (arrays, scalars)."""
    data = getattr(a, "data", a) if _is_tensor(a) else a
    return "cupy" if _is_cupy_array(data) else "numpy"


def _is_tensor(a) -> bool:
    return hasattr(a, "_is_gmsop_tensor")


def get_array_module(*args):
    """The array module (numpy or cupy) that the arguments live on.

    Tensors are unwrapped; Python scalars and ``None`` are neutral. Raises a
    ``TypeError`` when NumPy and CuPy arrays are mixed, instead of copying.
    """
    names = {backend_of(a) for a in args if a is not None and not isinstance(a, (int, float, bool))}
    if names == {"numpy", "cupy"}:
        raise TypeError(
            "cannot mix a NumPy (host) array and a CuPy (GPU) array in one operation. "
            "Move the data first: gmsop_np.to_gpu(x) / module.to_gpu() for the GPU, "
            "or gmsop_np.to_cpu(x) / module.to_cpu() for the host."
        )
    if "cupy" in names:
        return get_cupy()
    return np


def get_backend() -> str:
    """Name of the process-wide default backend used for newly created data."""
    return getattr(_state, "backend", _default_backend)


def set_backend(name: str) -> None:
    """Set the default backend ('numpy' or 'cupy') for newly created data."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {BACKENDS}")
    if name == "cupy":
        get_cupy()  # fail now, with the helpful message, not at first use
    _state.backend = name


@contextlib.contextmanager
def using_backend(name: str):
    """Context manager: ``with using_backend("cupy"): ...`` then restore."""
    previous = get_backend()
    set_backend(name)
    try:
        yield
    finally:
        _state.backend = previous


def default_xp():
    """The array module of the default backend."""
    return get_cupy() if get_backend() == "cupy" else np


def to_gpu(x):
    """Copy an array or Tensor to the GPU (returns CuPy data / a new Tensor)."""
    if _is_tensor(x):
        return x.to_gpu()
    if _is_cupy_array(x):
        return x
    return get_cupy().asarray(x)


def to_cpu(x):
    """Copy an array or Tensor to host memory (returns NumPy data / a new Tensor)."""
    if _is_tensor(x):
        return x.to_cpu()
    if _is_cupy_array(x):
        return x.get()
    return np.asarray(x)


def as_array(x, xp, dtype=None):
    """``x`` as an array of module ``xp``; scalars become 0-d arrays."""
    if xp is np and _is_cupy_array(x):
        raise TypeError("a CuPy array was given where a NumPy array is needed; use to_cpu(x) first")
    return xp.asarray(x, dtype=dtype)


def scatter_add(xp, target, index, values):
    """``target[index] += values`` with repeated indices accumulated (in place).

    NumPy spells it ``np.add.at``; CuPy spells it ``cupyx.scatter_add``.
    """
    if xp is np:
        np.add.at(target, index, values)
    else:
        import cupyx  # noqa: PLC0415

        cupyx.scatter_add(target, index, values)
    return target
