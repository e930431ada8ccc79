"""Shared fixtures: the backend fixture ``xp`` and Hypothesis profiles.

``xp`` runs a test once on NumPy and once on CuPy; the CuPy case is skipped
(with the reason) when CuPy or a GPU is missing. One suite for both backends.

Hypothesis profiles, chosen by the HYPOTHESIS_PROFILE environment variable:
``ci`` (default: few examples, the whole suite stays within CI's budget),
``dev`` (more examples) and ``thorough`` (many; run before a release).
"""

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import gmsop_np as gs

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


def _backend_params():
    gpu = pytest.mark.skipif(not gs.cupy_available(), reason="CuPy with a CUDA GPU is not available")
    return [pytest.param("numpy", id="numpy"), pytest.param("cupy", id="cupy", marks=[gpu, pytest.mark.gpu])]


@pytest.fixture(params=_backend_params())
def xp(request):
    """The array module under test (numpy or cupy); also sets it as the default backend."""
    with gs.using_backend(request.param):
        yield gs.get_array_module(gs.Tensor(0.0)) if request.param == "numpy" else gs.backend.get_cupy()


@pytest.fixture
def rng():
    """A fresh seeded NumPy generator per test (tests are reproducible)."""
    return np.random.default_rng(12345)


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
