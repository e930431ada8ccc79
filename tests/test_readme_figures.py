"""The README's measured figures are the ones ``scripts/readme_figures.py`` last measured.

The script runs the demo, the Figure 2 experiment and the ``textures`` comparison (minutes,
so never in the suite) and records the values with the README phrases made from them. Here:
the recorded phrases are the ones the values give (nobody edited a number by hand), and the
README contains every one of them. When the code changes what a run prints, rerun the script;
this test then names each README sentence to update.
"""

import importlib.util
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("readme_figures", ROOT / "scripts" / "readme_figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _recorded():
    return json.loads((ROOT / "scripts" / "readme_figures.json").read_text(encoding="utf-8"))


def test_the_recorded_quotes_are_made_from_the_recorded_values():
    record = _recorded()
    assert _script().quotes(record) == record["quotes"]
    assert set(record["measured"]) == {
        "date",
        "machine",
        "python",
        "load_average_before_after",
        "load_average_at_each_timed_run",
    }


def test_the_readme_quotes_every_recorded_figure():
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())  # wrapped lines join
    missing = [f"{name}: {quote!r}" for name, quote in _recorded()["quotes"].items() if quote not in readme]
    assert not missing, "README.md does not quote what scripts/readme_figures.py measured:\n" + "\n".join(missing)


def test_quotes_round_minutes_and_seconds_readably():
    minutes = _script()._minutes
    assert [minutes(s) for s in (4, 38, 44, 119, 121, 200)] == ["10 s", "40 s", "40 s", "120 s", "2 min", "3 min"]


def test_the_readme_shows_the_recorded_small_scale_run():
    """README, "Reproducing the paper at small scale": the tables and the claims' outcomes are
    those of the run recorded in docs/small_scale/ (what `gmsop experiment` wrote), verbatim."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in ("table2.md", "figure2.md"):
        recorded = (ROOT / "docs" / "small_scale" / name).read_text(encoding="utf-8").splitlines()
        shown = [line for line in recorded if line.startswith(("| ", "* ["))]
        assert len(shown) >= 8, f"docs/small_scale/{name} has no table"
        missing = [line for line in shown if line not in readme]
        assert not missing, f"README.md does not show these lines of docs/small_scale/{name}:\n" + "\n".join(missing)
    for name in ("table2.png", "figure2.png"):
        assert (ROOT / "docs" / "small_scale" / name).read_bytes().startswith(b"\x89PNG")
        assert f"](docs/small_scale/{name})" in readme
