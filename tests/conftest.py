"""Shared fixtures: the backend fixture ``xp`` and Hypothesis profiles.

``xp`` runs a test three times, one suite for every backend:

* ``numpy``: the host;
* ``sim``: the "cupy" backend on ``gmsop_np.testing.device_sim``, a strict CPU
  stand-in for CuPy (it always runs, in CI too: it catches implicit host/device
  transfers, host/device mixing and calls CuPy does not offer);
* ``cupy``: real CuPy on a GPU, skipped (with the reason) when there is none.

Hypothesis profiles, chosen by the HYPOTHESIS_PROFILE environment variable:
``ci`` (default: few examples, the whole suite stays within CI's budget),
``dev`` (more examples) and ``thorough`` (many; run before a release).
"""

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import gmsop_np as gs
from gmsop_np.testing import device_module, simulated_gpu

_common = dict(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=False,
    print_blob=True,
)
settings.register_profile("ci", max_examples=8, **_common)
settings.register_profile("dev", max_examples=30, **_common)
settings.register_profile("thorough", max_examples=300, **_common)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def _real_cupy():
    """The cupy module when CuPy imports and sees a CUDA device, else None (never the stand-in)."""
    try:
        import cupy  # noqa: PLC0415  (optional)

        return cupy if cupy.cuda.runtime.getDeviceCount() > 0 else None
    except Exception:  # ImportError, CUDARuntimeError, ...
        return None


REAL_CUPY = _real_cupy()


def _backend_params():
    gpu = pytest.mark.skipif(REAL_CUPY is None, reason="CuPy with a CUDA GPU is not available")
    return [
        pytest.param("numpy", id="numpy"),
        pytest.param("sim", id="sim"),
        pytest.param("cupy", id="cupy", marks=[gpu, pytest.mark.gpu]),
    ]


@pytest.fixture(params=_backend_params())
def xp(request):
    """The array module under test (numpy, the CuPy stand-in or cupy); also the default backend.

    For ``sim`` and ``cupy`` the test body runs with the "cupy" backend active, on
    the stand-in or on the GPU; everything is restored afterwards.
    """
    if request.param == "numpy":
        with gs.using_backend("numpy"):
            yield np
    else:
        device = simulated_gpu() if request.param == "sim" else device_module(REAL_CUPY)
        with device as module, gs.using_backend("cupy"):
            yield module


@pytest.fixture
def rng():
    """A fresh seeded NumPy generator per test (tests are reproducible)."""
    return np.random.default_rng(12345)


def pytest_configure(config):
    """A stand-in ``SimulationWarning`` (a call CuPy accepts but that misbehaves on a GPU) fails the test."""
    config.addinivalue_line("filterwarnings", "error::gmsop_np.testing.device_sim.SimulationWarning")


def pytest_terminal_summary(terminalreporter):
    """Show what the ``report``-marked tests printed (NS error table, parameter counts, ...).

    pytest hides the output of passing tests; these figures are part of what a run
    verifies, so they are printed after the summary (also with pytest-xdist).
    """
    reports = [r for r in terminalreporter.stats.get("passed", []) if r.when == "call" and "report" in r.keywords]
    if not reports:
        return
    terminalreporter.section("figures measured by the suite")
    for report in sorted(reports, key=lambda r: r.nodeid):
        text = "".join(content for name, content in report.sections if "stdout" in name).strip()
        if text:
            terminalreporter.write_line(f"{report.nodeid}")
            for line in text.splitlines():
                terminalreporter.write_line(f"    {line}")
