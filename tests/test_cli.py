"""The ``gmsop`` command line: train a tiny run -> eval -> plot, resume, experiments, errors."""

import json
import os
import tomllib

import pytest

from gmsop_np import cli

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TINY = ["--train-size", "32", "--val-size", "16", "--batch-size", "16", "--no-progress"]


def _is_png(path):
    with open(path, "rb") as handle:
        return handle.read(8) == PNG_SIGNATURE


def test_console_script_points_at_main():
    with open(os.path.join(os.path.dirname(__file__), "..", "pyproject.toml"), "rb") as handle:
        scripts = tomllib.load(handle)["project"]["scripts"]
    assert scripts["gmsop"] == "gmsop_np.cli:main"


def test_train_eval_plot_resume(tmp_path, capsys):
    run = str(tmp_path / "run")
    code = cli.main(["train", "-N", "4", "-K", "2", "--epochs", "1", "--out", run, *TINY])
    out = capsys.readouterr().out
    assert code == 0
    assert "GM-SOP-4-2" in out and "validation top-1 error" in out
    for name in ("config.json", "metrics.csv", "usage.csv", "last.npz", "best.npz"):
        assert os.path.isfile(os.path.join(run, name)), name
    with open(os.path.join(run, "config.json")) as handle:
        config = json.load(handle)
    assert config["options"]["head"] == "gmsop" and config["derived"]["schedule"] == [1]

    assert cli.main(["eval", run]) == 0
    assert "top-1 error" in capsys.readouterr().out
    with open(os.path.join(run, "eval_best.json")) as handle:
        result = json.load(handle)
    assert 0.0 <= result["top1"] <= 1.0 and result["images"] == 16

    assert cli.main(["plot", run]) == 0
    printed = capsys.readouterr().out.split()
    assert sorted(os.path.basename(p) for p in printed) == ["error.png", "loss.png", "usage.png"]
    assert all(_is_png(p) for p in printed)

    assert cli.main(["train", "--out", run, "--resume", "--no-progress"]) == 0  # already finished
    assert "finished: 1/1 epochs" in capsys.readouterr().out

    assert cli.main(["train", "--out", run, *TINY]) == 2  # would overwrite
    assert "--resume" in capsys.readouterr().err


def test_cli_errors_are_messages_not_tracebacks(tmp_path, capsys):
    assert cli.main([]) == 2
    assert cli.main(["eval", str(tmp_path)]) == 2
    assert "config.json" in capsys.readouterr().err
    assert cli.main(["plot", str(tmp_path)]) == 2
    assert "metrics.csv" in capsys.readouterr().err
    assert cli.main(["train", "--dataset", "imagenet64", "--out", str(tmp_path / "x"), "--no-progress"]) == 2
    assert "--data-dir" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["train", "--schedule", "4,zero"])


def test_experiments_smoke(tmp_path, capsys):
    out = str(tmp_path / "fig2")
    args = [
        "--out",
        out,
        "--epochs",
        "1",
        "--train-size",
        "32",
        "--val-size",
        "16",
        "--batch-size",
        "16",
        "--no-progress",
    ]
    assert cli.main(["experiment", "figure2", *args]) == 0
    assert _is_png(os.path.join(out, "figure2.png"))
    with open(os.path.join(out, "figure2.md")) as handle:
        rows = handle.read().splitlines()[2:]
    assert [r.split("|")[1].strip() for r in rows] == ["0", "100"]
    for row in rows:  # 16 components, each counted; 32 images x K=4
        counts = [int(c) for c in row.split("|")[2].split()]
        assert len(counts) == 16 and sum(counts) == 32 * 4

    out = str(tmp_path / "tab2")
    args[1] = out
    assert cli.main(["experiment", "table2", "--heads", "gap,srsop", *args]) == 0
    with open(os.path.join(out, "table2.md")) as handle:
        text = handle.read()
    assert "| GAP |" in text and "| SR-SOP |" in text and "representation" in text
