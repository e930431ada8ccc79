"""The notebooks: stored in sync, well-formed, and each one runs top to bottom.

Each notebook is stored twice: ``notebooks/NN_name.py`` (jupytext "percent" script,
the source of truth) and its pairing ``NN_name.ipynb`` (outputs stripped).
These tests check that

* each ``.ipynb`` has the same cells as its ``.py`` and carries no outputs;
* the first code cell is the parameter cell (tagged ``parameters``) with
  ``BACKEND`` and ``FIGURE_DIR``, and a notebook uses no feature that a later
  notebook introduces;
* each notebook executes top to bottom in a fresh ``python3`` kernel at CI sizes
  (its parameter cell replaced by ``CI_PARAMETERS`` below, figures written to a
  temporary folder) -- the notebook's own last cell asserts its milestone checks --
  writes every figure listed in ``FIGURES``, non-empty, and shows each of them
  inline (a PNG output, as JupyterLab displays it) without keeping it open. The kernel
  uses Jupyter's default inline matplotlib backend, which needs no display.

Regenerate a ``.ipynb`` after editing its ``.py``: ``jupytext --sync notebooks/NN_name.py``.
"""

import ast
import json
import os
import re
import sys
from pathlib import Path

import pytest

from gmsop_np.backend import SIMULATE_GPU_ENV

jupytext = pytest.importorskip("jupytext", reason="the notebooks extra (jupytext) is not installed")
nbclient = pytest.importorskip("nbclient", reason="nbclient is not installed")
nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
SCRIPTS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))

# Parameters for CI: tiny sizes (all notebooks together must run in ~150 s on one core).
CI_PARAMETERS = {
    "00_autodiff_engine": {"CHAIN_DEPTH": 8},
    "01_backends": {"SIZES": [32, 64], "REPEATS": 1},
    "02_conv_and_resnet": {"INPUT_SIZE": 16},
    "03_covariance_and_matrix_sqrt": {"IMAGE_SIZE": 32, "DIM": 16, "MAX_ITERS": 20, "GRAD_DIM": 4},
    "04_gating_and_balance": {"STEPS": 60, "IMAGE_SIZE": 12},
    "05_gmsop_end_to_end": {"EPOCHS": 1, "TRAIN_SIZE": 64, "VAL_SIZE": 32, "IMAGE_SIZE": 16, "EXPECT_LEARNING": False},
    "06_gpu_training": {"TRAIN_SIZE": 64, "VAL_SIZE": 32, "IMAGE_SIZE": 16, "BATCH": 32},
}

# The figures each notebook must write to FIGURE_DIR.
FIGURES = {
    "00_autodiff_engine": ["00_graph.png", "00_reuse_calls.png", "00_softmax_check.png"],
    "01_backends": ["01_matmul_throughput.png"],
    "02_conv_and_resnet": ["02_im2col.png", "02_conv_gradient.png", "02_resnet18_parameters.png"],
    "03_covariance_and_matrix_sqrt": [
        "03_covariances.png",
        "03_ns_convergence.png",
        "03_ns_polynomial.png",
        "03_backward_check.png",
    ],
    "04_gating_and_balance": ["04_topk_weights.png", "04_usage_histograms.png"],
    "05_gmsop_end_to_end": ["05_training_curves.png", "05_component_usage.png"],
    "06_gpu_training": ["06_throughput.png"],
}

# Where each feature first appears: a notebook must not use one before it is introduced.
INTRODUCED_IN = {
    r"\bgs\.nn\b|gmsop_np\.nn\b|gmsop_np import nn\b": 2,
    r"gmsop_np\.models|gs\.models|\bresnet18\(": 2,
    r"\bF\.conv2d\b|\bF\.batch_norm": 2,
    r"\bF\.cov_pool\b|\bF\.sqrtm_newton_schulz\b|\bF\.sqrtm_eig\b|\bF\.triu_vec\b": 3,
    r"\bF\.topk_softmax\b|\bF\.balance_loss\b|\bF\.noisy_gate_logits\b": 4,
    r"gmsop_np\.train\b|gmsop_np import train\b|gmsop_np\.optim|gmsop_np import optim\b": 5,
}


# Appended to each executed notebook: which matplotlib backend ran, and how many figures are still open.
FIGURE_PROBE = """\
import json as _json, matplotlib as _mpl, matplotlib.pyplot as _plt
print(_json.dumps({"backend": _mpl.get_backend(), "open_figures": len(_plt.get_fignums())}))"""


def _name(path: Path) -> str:
    return path.stem


def _cells(nb):
    return [(c.cell_type, c.source, tuple(c.metadata.get("tags", ()))) for c in nb.cells]


def _parameter_cell(nb):
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and "parameters" in code[0].metadata.get("tags", ()), (
        "the first code cell must be the parameter cell, tagged 'parameters' (in the .py: '# %% tags=[\"parameters\"]')"
    )
    return code[0]


def _parameters(source: str) -> dict:
    """The parameter cell's assignments, evaluated (plain literals only)."""
    values = {}
    for node in ast.parse(source).body:
        assert isinstance(node, ast.Assign) and len(node.targets) == 1, (
            "the parameter cell may only contain simple assignments NAME = literal"
        )
        values[node.targets[0].id] = ast.literal_eval(node.value)
    return values


def test_every_notebook_is_listed_here():
    names = {_name(p) for p in SCRIPTS}
    assert names == set(CI_PARAMETERS) == set(FIGURES), (
        f"notebooks/ and the tables in tests/test_notebooks.py disagree: {sorted(names ^ set(FIGURES))}"
    )


def test_jupytext_pairing_is_configured():
    config = (NOTEBOOKS / "jupytext.toml").read_text()
    assert re.search(r'formats\s*=\s*"ipynb,py:percent"', config)


@pytest.mark.parametrize("script", SCRIPTS, ids=_name)
def test_ipynb_matches_its_script(script):
    paired = script.with_suffix(".ipynb")
    assert paired.is_file(), f"{paired.name} is missing: run `jupytext --sync notebooks/{script.name}`"
    from_script = jupytext.read(script)
    stored = nbformat.read(paired, as_version=4)
    assert _cells(stored) == _cells(from_script), (
        f"{paired.name} is out of sync with {script.name}: run `jupytext --sync notebooks/{script.name}`"
    )
    for cell in stored.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, (
                f"{paired.name} is stored with outputs; strip them (jupytext --sync writes none)"
            )
    assert stored.metadata.get("kernelspec", {}).get("name") == "python3"


@pytest.mark.parametrize("script", SCRIPTS, ids=_name)
def test_parameter_cell_comes_first(script):
    values = _parameters(_parameter_cell(jupytext.read(script)).source)
    assert {"BACKEND", "FIGURE_DIR"} <= set(values), "the parameter cell must set BACKEND and FIGURE_DIR"
    assert values["BACKEND"] == "numpy", "notebooks default to the NumPy backend"


@pytest.mark.parametrize("script", SCRIPTS, ids=_name)
def test_no_feature_from_a_later_notebook(script):
    number = int(script.name[:2])
    code = "\n".join(c.source for c in jupytext.read(script).cells if c.cell_type == "code")
    for pattern, introduced in INTRODUCED_IN.items():
        if number < introduced:
            assert not re.search(pattern, code), (
                f"{script.name} uses {pattern!r}, which notebook {introduced:02d} introduces"
            )


@pytest.fixture(scope="session")
def kernel_manager_factory(tmp_path_factory):
    """A 'python3' kernel that runs *this* interpreter (whatever `python` is on PATH)."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    kernels = tmp_path_factory.mktemp("kernels")
    spec_dir = kernels / "python3"
    spec_dir.mkdir()
    (spec_dir / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "Python 3 (test)",
                "language": "python",
            }
        )
    )

    def make():
        specs = KernelSpecManager(kernel_dirs=[str(kernels)], ensure_native_kernel=False)
        return KernelManager(kernel_name="python3", kernel_spec_manager=specs)

    return make


def _kernel_env():
    env = dict(os.environ)
    env.pop("MPLBACKEND", None)  # the kernel's default: the inline backend, as in JupyterLab
    env.update(
        OMP_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        PYDEVD_DISABLE_FILE_VALIDATION="1",
    )
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def _execute(script, tmp_path, kernel_manager_factory, overrides=(), env=()):
    """Run ``script`` at CI sizes (plus ``overrides`` of its parameters) in a fresh kernel; the executed notebook."""
    name = _name(script)
    nb = jupytext.read(script)
    cell = _parameter_cell(nb)
    values = _parameters(cell.source)
    overrides = dict(CI_PARAMETERS[name], FIGURE_DIR=str(tmp_path), **dict(overrides))
    unknown = set(overrides) - set(values)
    assert not unknown, f"CI overrides {sorted(unknown)} are not parameters of {script.name}"
    values.update(overrides)
    cell.source = "\n".join(f"{key} = {value!r}" for key, value in values.items())
    nb.cells.append(nbformat.v4.new_code_cell(FIGURE_PROBE))

    client = nbclient.NotebookClient(
        nb,
        km=kernel_manager_factory(),
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    client.execute(env={**_kernel_env(), **dict(env)})  # raises CellExecutionError (with the traceback) on failure
    return nb


def _printed(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)


@pytest.mark.parametrize("script", SCRIPTS, ids=_name)
def test_notebook_runs_and_writes_its_figures(script, tmp_path, kernel_manager_factory):
    name = _name(script)
    nb = _execute(script, tmp_path, kernel_manager_factory)
    for figure in FIGURES[name]:
        path = tmp_path / figure
        assert path.is_file() and path.stat().st_size > 0, f"{script.name} did not write {figure}"
    shown = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(shown) == len(FIGURES[name]), (
        f"{script.name} shows {len(shown)} figures inline but saves {len(FIGURES[name])}: show each saved "
        "figure once (fig.savefig(...), then plt.show())"
    )
    probe = json.loads(nb.cells[-1].outputs[0]["text"])
    assert "inline" in probe["backend"], f"the kernel ran with {probe['backend']!r}, not the inline backend"
    assert probe["open_figures"] == 0, f"{script.name} leaves {probe['open_figures']} figures open"


# The notebooks about the GPU run their GPU cells here too, on the CPU stand-in for CuPy
# (GMSOP_NP_SIMULATE_GPU=1, BACKEND="cupy"): a CuPy path that moves data implicitly or calls
# something CuPy lacks fails here, without a GPU. Each entry: what the GPU cells print when they ran.
ON_THE_STAND_IN = {
    "01_backends": ["CPU stand-in for CuPy", "CuPy:  loss", "... and on CuPy", "cupy (CPU stand-in) n="],
    "06_gpu_training": ["on the CPU stand-in for CuPy", "CuPy:  loss", "the same masks and noise on both"],
}


@pytest.mark.parametrize("name", sorted(ON_THE_STAND_IN))
def test_gpu_notebooks_run_their_gpu_cells_on_the_stand_in(name, tmp_path, kernel_manager_factory):

    nb = _execute(
        NOTEBOOKS / f"{name}.py", tmp_path, kernel_manager_factory, {"BACKEND": "cupy"}, {SIMULATE_GPU_ENV: "1"}
    )
    printed = _printed(nb)
    for expected in ON_THE_STAND_IN[name]:
        assert expected in printed, f"{name} on the stand-in did not print {expected!r}: its GPU cells did not run"
    assert "all checks passed" in printed
