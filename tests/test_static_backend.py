"""Static check: no bare ``np.`` / ``numpy.`` inside forward/backward of any Function.

Such a call silently copies CuPy data to the host (or fails) on the GPU -- the
classic NumPy/CuPy mixing bug. Code must use ``xp = get_array_module(...)``.
"""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "gmsop_np"
CHECKED_DIRS = ["functions", "nn"]
NUMPY_NAMES = {"np", "numpy"}


def bare_numpy_calls(source: str, filename: str = "<string>"):
    """(function, line) of every ``np.<attr>`` inside a method named forward/backward."""
    found = []
    for cls in ast.walk(ast.parse(source, filename)):
        if not isinstance(cls, ast.ClassDef):
            continue
        for method in cls.body:
            if isinstance(method, ast.FunctionDef) and method.name in ("forward", "backward"):
                for node in ast.walk(method):
                    if (
                        isinstance(node, ast.Attribute)
                        and isinstance(node.value, ast.Name)
                        and node.value.id in NUMPY_NAMES
                    ):
                        found.append(
                            f"{filename}:{node.lineno} {cls.name}.{method.name} uses {node.value.id}.{node.attr}"
                        )
    return found


def test_checker_catches_a_bare_numpy_call():
    bad = "class F:\n    def forward(self, x):\n        return np.exp(x)\n"
    good = "class F:\n    def forward(self, x):\n        xp = get_array_module(x)\n        return xp.exp(x)\n"
    assert bare_numpy_calls(bad) == ["<string>:3 F.forward uses np.exp"]
    assert bare_numpy_calls(good) == []


@pytest.mark.parametrize("directory", CHECKED_DIRS)
def test_no_bare_numpy_in_forward_or_backward(directory):
    files = sorted((PACKAGE / directory).glob("*.py"))
    assert files, f"no modules found under gmsop_np/{directory}"
    offences = [hit for f in files for hit in bare_numpy_calls(f.read_text(), f.name)]
    assert not offences, "use xp = get_array_module(...) instead:\n" + "\n".join(offences)
