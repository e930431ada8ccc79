"""Every hand-written backward points at the equation it implements.

For each ``Function`` subclass defined in ``gmsop_np/functions/*.py`` and
``gmsop_np/nn/*.py`` whose class defines its own ``backward``, the class
docstring must cite ``derivations/<file>.md, eq. (N)`` (or ``eqs. (N), (M)``),
the file must exist, and it must contain ``\\tag{N}``. Each derivation file
numbers its equations uniquely, and ``derivations/README.md`` indexes every file.
"""

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import gmsop_np
from gmsop_np.core import Function

ROOT = Path(__file__).resolve().parents[1]
DERIVATIONS = ROOT / "derivations"
PACKAGES = ("gmsop_np.functions", "gmsop_np.nn")

# "derivations/06_newton_schulz.md, eq. (7)" or "..., eqs. (7), (8) and (9)"
CITATION = re.compile(
    r"derivations/(?P<file>[\w.-]+\.md),\s+eqs?\.\s+(?P<eqs>\(\d+\)(?:\s*(?:,|and|–|-|to)\s*\(\d+\))*)"
)
TAG = re.compile(r"\\tag\{([^}]*)\}")


def _modules():
    """(module name, module or the exception raised while importing it)."""
    found = []
    for package_name in PACKAGES:
        package = importlib.import_module(package_name)
        for info in pkgutil.iter_modules(package.__path__):
            name = f"{package_name}.{info.name}"
            try:
                found.append((name, importlib.import_module(name)))
            except Exception as exc:  # a half-written module must fail loudly, not vanish
                found.append((name, exc))
    return found


def _cases():
    """One pytest case per Function subclass with its own backward (or per broken module)."""
    cases = []
    for name, module in _modules():
        if isinstance(module, Exception):
            cases.append(pytest.param(name, module, id=f"{name}:import-error"))
            continue
        for cls_name, cls in sorted(vars(module).items()):
            if (
                inspect.isclass(cls)
                and issubclass(cls, Function)
                and cls is not Function
                and cls.__module__ == name
                and "backward" in cls.__dict__
            ):
                cases.append(pytest.param(name, cls, id=f"{name.split('.', 1)[1]}.{cls_name}"))
    return cases


CASES = _cases()


def _tags(path: Path) -> list[str]:
    return TAG.findall(path.read_text(encoding="utf-8"))


def citations(doc: str):
    """[(file, equation number), ...] cited in a docstring."""
    return [(m["file"], int(n)) for m in CITATION.finditer(doc or "") for n in re.findall(r"\d+", m["eqs"])]


def test_walk_finds_the_core_ops():
    """Guard the walk itself: if it found nothing, every other check would pass vacuously."""
    names = {c.values[1].__name__ for c in CASES if inspect.isclass(c.values[1])}
    assert {"Add", "MatMul", "GetItem", "Sum"} <= names, names


@pytest.mark.parametrize("module_name, cls", CASES)
def test_function_backward_cites_a_derivation(module_name, cls):
    if isinstance(cls, Exception):
        pytest.fail(f"importing {module_name} failed: {type(cls).__name__}: {cls}")
    found = citations(cls.__doc__)
    assert found, (
        f"{module_name}.{cls.__name__} defines backward but its class docstring cites no derivation; "
        "add a line such as 'See derivations/NN_topic.md, eq. (N).' (CONTRIBUTING.md, Derivations)"
    )
    for file, number in found:
        path = DERIVATIONS / file
        assert path.is_file(), f"{cls.__name__} cites {file}, which does not exist in derivations/"
        assert str(number) in _tags(path), (
            f"{cls.__name__} cites {file}, eq. ({number}), but {file} has no \\tag{{{number}}}"
        )


def test_citation_pattern_reads_lists_of_equations():
    doc = "See derivations/06_newton_schulz.md, eqs. (7), (8) and (9); derivations/01_autodiff.md, eq. (5)."
    assert citations(doc) == [
        ("06_newton_schulz.md", 7),
        ("06_newton_schulz.md", 8),
        ("06_newton_schulz.md", 9),
        ("01_autodiff.md", 5),
    ]
    assert citations("derivations/01_autodiff.md eq 5") == []


DERIVATION_FILES = sorted(p for p in DERIVATIONS.glob("*.md") if p.name != "README.md")


@pytest.mark.parametrize("path", DERIVATION_FILES, ids=lambda p: p.name)
def test_equation_tags_are_unique_within_a_file(path):
    tags = _tags(path)
    assert tags, f"{path.name} has no numbered equation ($$ ... \\tag{{N}} $$)"
    duplicates = sorted({t for t in tags if tags.count(t) > 1})
    assert not duplicates, f"{path.name} numbers several equations {duplicates}"


@pytest.mark.parametrize("path", DERIVATION_FILES, ids=lambda p: p.name)
def test_every_tag_is_inside_a_display_block(path):
    """\\tag only works inside $$ ... $$; outside it renders as literal text."""
    text = path.read_text(encoding="utf-8")
    blocks = re.findall(r"\$\$(.*?)\$\$", text, flags=re.S)
    inside = sum(len(TAG.findall(b)) for b in blocks)
    assert inside == len(TAG.findall(text)), f"{path.name} has a \\tag outside a $$ ... $$ block"


def test_readme_indexes_every_derivation():
    index = (DERIVATIONS / "README.md").read_text(encoding="utf-8")
    missing = [p.name for p in DERIVATION_FILES if p.name not in index]
    assert not missing, f"derivations/README.md does not list {missing}"


def test_package_is_the_one_under_test():
    assert Path(gmsop_np.__file__).resolve().parent == ROOT / "gmsop_np"
