"""Backends: array-module dispatch, the default backend, device moves, and the
refusal to mix host and device arrays."""

import re
import tomllib
from pathlib import Path

import numpy as np
import pytest

import gmsop_np as gs
import gmsop_np.functional as F
from gmsop_np import backend


def test_get_array_module_unwraps_tensors_and_scalars():
    assert gs.get_array_module(np.ones(2)) is np
    assert gs.get_array_module(gs.Tensor(np.ones(2)), 3.0, None) is np
    assert gs.get_array_module() is np


def test_backend_is_a_context_that_restores_the_previous_one():
    assert gs.get_backend() == "numpy"
    with pytest.raises(ValueError, match="unknown backend 'torch'"):
        with gs.using_backend("torch"):
            pass
    with gs.using_backend("numpy"):
        assert gs.get_backend() == "numpy"
    assert gs.get_backend() == "numpy"


@pytest.mark.skipif(gs.cupy_available(), reason="checks the message shown when CuPy is missing")
def test_cupy_backend_without_gpu_explains_how_to_get_it():
    with pytest.raises(RuntimeError, match=r"README, section 'GPU'"):
        with gs.using_backend("cupy"):
            pass
    assert gs.get_backend() == "numpy", "a failed switch leaves the backend unchanged"
    with pytest.raises(RuntimeError, match="'numpy' backend"):
        gs.to_gpu(np.ones(2))


class FakeCupyArray:
    """Stands in for a cupy.ndarray: only its type's module name matters to dispatch."""

    __module__ = "cupy._core.core"


def test_mixing_numpy_and_cupy_is_a_type_error_that_says_how_to_move_data():
    with pytest.raises(TypeError) as info:
        backend.get_array_module(np.ones(2), FakeCupyArray())
    message = str(info.value)
    assert "NumPy" in message and "CuPy" in message and "to_gpu" in message and "to_cpu" in message


def test_tensor_to_cpu_returns_new_leaf_with_copy():
    t = gs.Tensor(np.arange(3.0), requires_grad=True)
    c = t.to_cpu()
    assert c is not t and c.requires_grad and c.backend == "numpy"
    np.testing.assert_array_equal(gs.to_cpu(t.data), [0.0, 1.0, 2.0])


def test_numpy_scalars_are_neutral_like_python_scalars(xp):
    """CuPy takes NumPy scalars as kernel arguments: np.float32(2) must not count as a host array."""
    device = xp.ones(2)
    for scalar in (2.0, np.float64(2), np.float32(2), np.int64(2)):
        assert gs.get_array_module(device, scalar) is xp


def test_tensor_created_on_the_default_backend(xp):
    t = gs.Tensor([1.0, 2.0])
    assert gs.get_array_module(t) is xp
    assert t.backend == gs.get_backend()


def test_moves_round_trip_and_mixing_in_an_op_raises(xp):
    if xp is np:
        pytest.skip("moves between host and device need a device backend")
    host = np.arange(6.0).reshape(2, 3)
    device = gs.to_gpu(gs.Tensor(host))
    assert device.backend == "cupy"
    np.testing.assert_array_equal(device.numpy(), host)
    np.testing.assert_array_equal(gs.to_cpu(device).data, host)
    with pytest.raises(TypeError, match="cannot mix"):
        F.add(device, gs.Tensor(host))


# ----- installing for a GPU ----------------------------------------------------------------------------
ROOT = Path(__file__).resolve().parents[1]


def test_one_gpu_extra_per_cuda_major_each_with_its_cuda_libraries():
    """gpu-cuda12 / gpu-cuda13 install exactly one CuPy 14 for that CUDA, with its CUDA libraries from pip
    ([ctk]); there is no ambiguous `gpu` extra that would put a CUDA 12 CuPy beside a CUDA 13 one."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras["gpu-cuda12"] == ["cupy-cuda12x[ctk]>=14,<15"]
    assert extras["gpu-cuda13"] == ["cupy-cuda13x[ctk]>=14,<15"]
    assert not [name for name in extras if name.startswith("gpu") and name not in ("gpu-cuda12", "gpu-cuda13")]
    cupy_packages = [req for name, reqs in extras.items() for req in reqs if req.startswith("cupy")]
    assert len(cupy_packages) == 2, "no other extra may pull a CuPy"


def test_the_readme_gpu_section_says_which_extra_to_pick_and_every_install_hint_names_a_real_extra():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## GPU\n", 1)[1].split("\n## ", 1)[0]
    for needed in (
        "nvidia-smi",
        "CUDA Version: 13.x",
        'pip install -e ".[app,gpu-cuda13]"',
        "CUDA Version: 12.x",
        'pip install -e ".[app,gpu-cuda12]"',
        "[ctk]",
        "import cupy",
        "cupy_available()",
        "--backend cupy",
    ):
        assert needed in section, f"README section GPU lacks {needed!r}"
    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    sources = [
        ROOT / "README.md",
        ROOT / "CONTRIBUTING.md",
        *ROOT.glob("notebooks/*.py"),
        *ROOT.glob("gmsop_np/**/*.py"),
    ]
    for path in sources:
        for hint in re.findall(r"\.\[([\w,-]+)\]", path.read_text()):
            unknown = set(hint.split(",")) - extras
            assert not unknown, f"{path.relative_to(ROOT)} names the extra(s) {unknown}, which pyproject.toml lacks"
