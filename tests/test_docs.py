"""The documentation runs: every docstring example (doctest), every Python block of the README,
and no file refers to documents outside the repository."""

import doctest
import importlib
import pathlib
import pkgutil
import re

import pytest

import gmsop_np

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _modules():
    for info in pkgutil.walk_packages(gmsop_np.__path__, "gmsop_np."):
        yield info.name


@pytest.mark.parametrize("name", sorted(_modules()))
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    failures, _ = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert failures == 0, f"{failures} docstring example(s) of {name} failed (run: python -m doctest -v)"


def test_the_package_has_docstring_examples():
    finder = doctest.DocTestFinder()
    count = sum(len(test.examples) for name in _modules() for test in finder.find(importlib.import_module(name)))
    assert count >= 10, f"only {count} docstring examples: the public API should show how it is called"


def _readme_python_blocks():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_readme_python_blocks_run(tmp_path, monkeypatch):
    """The README's Python blocks, in order, in one namespace (as a reader would paste them)."""
    blocks = _readme_python_blocks()
    assert blocks, "the README shows no Python example"
    monkeypatch.chdir(tmp_path)  # examples may write run directories
    namespace = {}
    for i, block in enumerate(blocks):
        try:
            exec(compile(block, f"README.md python block {i + 1}", "exec"), namespace)  # noqa: S102
        except Exception as exc:  # pragma: no cover - the message is the point
            pytest.fail(f"README python block {i + 1} failed: {type(exc).__name__}: {exc}\n{block}")


OUTSIDE_REFERENCES = re.compile(r"SPEC\s*§|SPEC\.md|/work/shared|\.\./shared|STYLE\.md")


def test_no_file_refers_to_documents_outside_the_repository():
    offending = []
    for path in ROOT.rglob("*"):
        if any(part.startswith(".") for part in path.relative_to(ROOT).parts) or not path.is_file():
            continue
        if path.suffix not in {".py", ".md", ".toml", ".txt", ".cfg", ".yaml", ".ipynb"}:
            continue
        if path.name == "test_docs.py":
            continue
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if OUTSIDE_REFERENCES.search(line):
                offending.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:100]}")
    assert not offending, "references to documents outside the repository:\n" + "\n".join(offending)
