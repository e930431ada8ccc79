"""``gmsop plot``: the figures of a run directory, read back from their axes.

Each test writes a small run directory by hand (config.json, metrics.csv, usage.csv
with known values) and checks what the figures show: titles naming the run, model and
data set; whole-number epoch ticks; labelled axes with units; the plotted values; no
top-5 curve where top-5 is undefined (5 classes or fewer, or not recorded); and one
numbering of the components (0..N-1, as in usage.csv) on the usage bars.
"""

import csv
import json

import numpy as np
import pytest

pytest.importorskip("matplotlib", reason="plotting needs matplotlib (the app extra)")

import matplotlib  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

from gmsop_np.plots import plot_run, read_metrics, run_figures  # noqa: E402
from gmsop_np.train import METRIC_COLUMNS  # noqa: E402

RUN_NAME = "demo-run"
MODEL = "tiny + GM-SOP-4-2"
USAGE = [[1, 30, 10, 0, 20, 5, 15], [2, 12, 14, 9, 11, 20, 14]]  # epoch, then components 0..5


def _metrics_rows(epochs, num_classes, top5_cell):
    """Distinct, recognisable values per column: column j of epoch e is 0.01 * (j + 1) + 0.001 * e."""
    rows = []
    for e in range(1, epochs + 1):
        row = {c: 0.01 * (j + 1) + 0.001 * e for j, c in enumerate(METRIC_COLUMNS)}
        row["epoch"] = e
        for key in ("train_top5", "val_top5"):
            row[key] = top5_cell(row[key])
        rows.append(row)
    return rows


def make_run(tmp_path, epochs=3, num_classes=10, top5_cell=lambda value: value, config=True, usage=True):
    """A run directory as ``gmsop train`` leaves it; returns (path, metrics rows)."""
    run = tmp_path / RUN_NAME
    run.mkdir()
    if config:
        options = {"arch": "tiny", "head": "gmsop", "num_components": 4, "k": 2, "dataset": "textures"}
        (run / "config.json").write_text(
            json.dumps({"options": options, "derived": {"num_classes": num_classes, "model": MODEL}})
        )
    rows = _metrics_rows(epochs, num_classes, top5_cell)
    with open(run / "metrics.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=METRIC_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    if usage:
        with open(run / "usage.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["epoch"] + [f"component_{i}" for i in range(6)])
            writer.writerows(USAGE)
    return run, rows


def _axis(fig):
    (ax,) = fig.axes
    return ax


def _visible_ticks(ax):
    low, high = ax.get_xlim()
    return [t for t in ax.get_xticks() if low <= t <= high]


def _labels(ax):
    return [line.get_label() for line in ax.get_lines()]


def test_titles_say_what_the_figure_shows_and_for_which_run(tmp_path):
    run, _ = make_run(tmp_path)
    figures = run_figures(run)
    assert sorted(figures) == ["error", "loss", "usage"]
    for name, what in [("loss", "loss"), ("error", "error"), ("usage", "per component")]:
        title = _axis(figures[name]).get_title()
        assert what in title.splitlines()[0], (name, title)
        for part in (RUN_NAME, MODEL, "textures"):
            assert part in title, (name, part, title)


def test_titles_without_config_json_still_name_the_run(tmp_path):
    run, _ = make_run(tmp_path, config=False)
    for fig in run_figures(run).values():
        assert RUN_NAME in _axis(fig).get_title() and "unknown model" in _axis(fig).get_title()


@pytest.mark.parametrize("epochs", [1, 2, 3, 7, 40])
def test_epoch_ticks_are_whole_numbers_covering_the_epochs(tmp_path, epochs):
    run, _ = make_run(tmp_path, epochs=epochs)
    figures = run_figures(run)
    for name in ("loss", "error"):
        ax = _axis(figures[name])
        ticks = _visible_ticks(ax)
        assert ticks, f"{name}: no epoch tick in view"
        assert all(float(t).is_integer() for t in ticks), f"{name}: fractional epoch ticks {ticks}"
        assert min(ticks) >= 1 and max(ticks) <= epochs, f"{name}: a tick outside epochs 1..{epochs}: {ticks}"
        low, high = ax.get_xlim()
        assert low < 1 and high > epochs, f"{name}: epochs 1..{epochs} not all in view ({low}, {high})"


def test_axes_are_labelled_with_units_and_have_legends(tmp_path):
    run, _ = make_run(tmp_path)
    figures = run_figures(run)
    loss, error, usage = (_axis(figures[n]) for n in ("loss", "error", "usage"))
    assert loss.get_xlabel() == error.get_xlabel() == "epoch"
    assert "nats" in loss.get_ylabel() and "(%)" in error.get_ylabel()
    assert "component" in usage.get_xlabel() and "samples" in usage.get_ylabel()
    for ax in (loss, error):
        legend = ax.get_legend()
        assert legend is not None
        assert [t.get_text() for t in legend.get_texts()] == _labels(ax)


def test_curves_plot_the_recorded_metrics(tmp_path):
    run, rows = make_run(tmp_path, epochs=4)
    figures = run_figures(run)
    expected = {
        "train (CE + L_B / B)": [r["train_loss"] for r in rows],  # balance_loss is recorded (non-zero)
        "validation (CE)": [r["val_loss"] for r in rows],
        "train top-1": [100 * r["train_top1"] for r in rows],
        "validation top-1": [100 * r["val_top1"] for r in rows],
        "train top-5": [100 * r["train_top5"] for r in rows],
        "validation top-5": [100 * r["val_top5"] for r in rows],
    }
    lines = {line.get_label(): line for name in ("loss", "error") for line in _axis(figures[name]).get_lines()}
    for label, values in expected.items():
        np.testing.assert_allclose(lines[label].get_xdata(), [1, 2, 3, 4], err_msg=label)
        np.testing.assert_allclose(lines[label].get_ydata(), values, err_msg=label)
    chance = lines["chance (top-1)"]  # 10 classes: chance is 90% top-1 error
    np.testing.assert_allclose(chance.get_ydata(), [90, 90])


def test_loss_label_without_a_balance_loss(tmp_path):
    run, _ = make_run(tmp_path)
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    for row in rows:
        row["balance_loss"] = "0.0"  # a head without a balance loss (or alpha = 0)
    with open(run / "metrics.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=METRIC_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    assert _labels(_axis(run_figures(run)["loss"])) == ["train (CE)", "validation (CE)"]


@pytest.mark.parametrize("num_classes", [2, 4, 5])
def test_no_top5_curve_with_five_classes_or_fewer(tmp_path, num_classes):
    # What gmsop train records today for C <= 5 classes: top-C error, always 0.
    run, _ = make_run(tmp_path, num_classes=num_classes, top5_cell=lambda value: 0.0)
    ax = _axis(run_figures(run)["error"])
    assert _labels(ax) == ["train top-1", "validation top-1", "chance (top-1)"]
    assert not any("top-5" in t.get_text() for t in ax.get_legend().get_texts())


def test_top5_curve_with_six_classes(tmp_path):
    run, _ = make_run(tmp_path, num_classes=6)
    labels = _labels(_axis(run_figures(run)["error"]))
    assert "train top-5" in labels and "validation top-5" in labels


def test_top5_recorded_as_empty_cells_is_not_drawn(tmp_path):
    # An undefined top-5 written as empty cells reads as NaN and draws no curve, even
    # when the number of classes is unknown (no config.json).
    run, _ = make_run(tmp_path, config=False, top5_cell=lambda value: "")
    metrics = read_metrics(run)
    assert np.isnan(metrics["val_top5"]).all() and not np.isnan(metrics["val_top1"]).any()
    assert _labels(_axis(run_figures(run)["error"])) == ["train top-1", "validation top-1"]


def test_usage_bars_number_components_as_usage_csv_does(tmp_path):
    run, _ = make_run(tmp_path)
    ax = _axis(run_figures(run)["usage"])
    bars = ax.patches
    centres = [bar.get_x() + bar.get_width() / 2 for bar in bars]
    heights = {label.get_text(): bar.get_height() for label, bar in zip(ax.get_xticklabels(), bars)}
    np.testing.assert_allclose(centres, np.arange(6))
    np.testing.assert_allclose(ax.get_xticks(), np.arange(6))
    with open(run / "usage.csv") as handle:
        last = list(csv.DictReader(handle))[-1]
    assert "epoch 2" in ax.get_title()
    for i in range(6):
        assert heights[str(i)] == float(last[f"component_{i}"]), f"bar {i} is not column component_{i}"
    counts = np.array(USAGE[-1][1:], dtype=float)
    assert f"CV {counts.std() / counts.mean():.2f}" in ax.get_title()


def test_plot_run_writes_pngs_and_leaves_pyplot_alone(tmp_path):
    run, _ = make_run(tmp_path)
    backend, open_figures = matplotlib.get_backend(), plt.get_fignums()
    paths = plot_run(run, tmp_path / "out")
    assert [p.rsplit("/", 1)[-1] for p in map(str, paths)] == ["loss.png", "error.png", "usage.png"]
    for path in paths:
        with open(path, "rb") as handle:
            assert handle.read(8) == b"\x89PNG\r\n\x1a\n", path
    assert matplotlib.get_backend() == backend and plt.get_fignums() == open_figures


def test_plot_run_without_a_mixture_head_has_no_usage_figure(tmp_path):
    run, _ = make_run(tmp_path, usage=False)
    assert [str(p).rsplit("/", 1)[-1] for p in plot_run(run)] == ["loss.png", "error.png"]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("metrics.csv", "epoch,train_loss,val_loss,train_top1,val_top1\n1,abc,1,1,1\n", "'abc'"),
        ("metrics.csv", "epoch,loss\n1,2\n", "lacks the columns"),
        ("metrics.csv", "", "no epochs"),
        ("config.json", "{", "config.json"),
        ("usage.csv", "epoch,component_0\n1,x\n", "usage.csv"),
    ],
)
def test_damaged_run_files_are_named(tmp_path, name, content, message):
    run, _ = make_run(tmp_path)
    (run / name).write_text(content)
    with pytest.raises(ValueError, match=message) as info:
        run_figures(run)
    assert name in str(info.value)
