"""Test support that ships with the library (tests, notebooks and subprocesses use it).

``simulated_gpu()`` runs the "cupy" backend on ``device_sim``, a strict CPU stand-in
for CuPy (its docstring says what it checks and what it cannot)::

    from gmsop_np.testing import device_sim, simulated_gpu

    with simulated_gpu(), gs.using_backend("cupy"), device_sim.counting() as counts:
        loss = train_step(...)
    print(counts.summary())

A subprocess or a notebook kernel gets the same with the environment variable
``GMSOP_NP_SIMULATE_GPU=1`` (read by ``gmsop_np.backend`` when it first needs CuPy).

``gmsop_np.testing.step_budget`` counts one training step this way and holds its budget
(``benchmarks/count_step.py``, ``tests/test_step_budget.py``).
"""

from __future__ import annotations

import contextlib

from .. import backend
from . import device_sim

__all__ = ["device_module", "device_sim", "simulated_gpu", "simulating"]


@contextlib.contextmanager
def device_module(module):
    """Put ``module`` (cupy or the stand-in) in the backend's device slot for the block; restore the previous one."""
    previous = backend._use_device_module(module)
    try:
        yield module
    finally:
        backend._use_device_module(previous)


def simulated_gpu():
    """``with simulated_gpu(): ...`` runs the "cupy" backend on the stand-in inside the block."""
    return device_module(device_sim)


def simulating() -> bool:
    """Whether the "cupy" backend runs on the stand-in (inside ``simulated_gpu()``, or with
    ``GMSOP_NP_SIMULATE_GPU=1``) rather than on CuPy and a GPU."""
    return backend.cupy_available() and backend.get_cupy() is device_sim
