"""The training step as the device sees it: sums kept on the device and read every --log-every
steps, the graph of a step released before the next forward, and the whole trainer (fit, resume
across backends, evaluation) on the CPU stand-in for CuPy with its synchronisations counted.

The stand-in computes with NumPy, so a run on it gives the same numbers as a NumPy run: the
backend tests compare metrics exactly.
"""

import csv
import gc
import os
import weakref

import numpy as np
import pytest

import gmsop_np.functional as F
from gmsop_np.core import Tensor
from gmsop_np.testing import device_sim, simulated_gpu
from gmsop_np.train import TIMING_COLUMNS, TrainConfig, Trainer, evaluate_checkpoint, loop
from gmsop_np.train.meters import DeviceSums

TINY = dict(train_size=32, val_size=16, batch_size=16, epochs=2, schedule=[1, 1], lr=0.05, progress=False)
GATED = dict(head="gmsop", num_components=4, k=2)


def _metrics(out):
    with open(os.path.join(out, "metrics.csv"), newline="") as handle:
        return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in csv.DictReader(handle)]


def _config(tmp_path, name, **options):
    return TrainConfig(**{**TINY, **GATED, **options, "out": str(tmp_path / name)})


# ----- the metric: label_rank ------------------------------------------------------------------------
def test_label_rank_counts_the_classes_ranked_above_the_label(rng):
    logits = np.array([[0.1, 0.7, 0.2, 0.0], [0.5, 0.5, 0.5, 0.1], [3.0, 2.0, 1.0, 0.0]])
    # row 0: label 2 is beaten by 0.7; row 1: ties go to the lower index (0 and 1 rank above 2); row 2: first
    assert F.label_rank(logits, [2, 2, 0]).tolist() == [1, 2, 0]
    z = rng.normal(size=(64, 7)).round(1)  # rounded: many ties
    labels = rng.integers(0, 7, size=64)
    ranks = F.label_rank(z, labels)
    for k in (1, 3, 7):
        assert F.topk_error(z, labels, k) == np.mean(ranks >= k)


# ----- the sums on the device -----------------------------------------------------------------------
def test_device_sums_are_the_per_step_host_sums_to_the_last_bit(rng):
    """What the trainer used to add on the host after every step (float(loss) * B, the error rates
    times B) is what the device array holds, bit for bit: the printed figures do not change."""
    sums = DeviceSums(np, {"loss_sum": 1.25})  # a resumed epoch starts from its saved sums
    host = {"loss_sum": 1.25, "top1_sum": 0.0, "top5_sum": 0.0, "balance_sum": 0.0}
    for b in (32, 32, 8):
        logits = Tensor(rng.normal(size=(b, 10)).astype(np.float32))
        labels = rng.integers(0, 10, size=b)
        loss, balance = F.softmax_cross_entropy(logits, labels), Tensor(np.float32(rng.uniform(0, 50)))
        sums.add(loss, logits, labels, balance)
        host["loss_sum"] += float(loss.item()) * b
        host["top1_sum"] += F.topk_error(logits, labels, 1) * b
        host["top5_sum"] += F.topk_error(logits, labels, 5) * b
        host["balance_sum"] += float(balance.item()) * b
    assert sums.read() == host


def test_the_log_interval_changes_when_figures_are_read_not_the_figures(tmp_path):
    reads = []
    original = DeviceSums.read

    def counted(self):
        reads.append(1)
        return original(self)

    DeviceSums.read = counted
    try:
        one_epoch = dict(train_size=48, epochs=1, schedule=None)  # three steps
        every_step = Trainer(_config(tmp_path, "every", log_every=1, **one_epoch))
        every_step.fit()
        steps_read = len(reads)
        reads.clear()
        rarely = Trainer(_config(tmp_path, "rarely", log_every=2, **one_epoch))
        rarely.fit()
    finally:
        DeviceSums.read = original
    # three steps, plus one validation read; every 2 steps: after step 2 and at the epoch's end (step 3)
    assert steps_read == 3 + 1 and len(reads) == 2 + 1
    assert _metrics(every_step.out) == _metrics(rarely.out)


# ----- memory: the previous step's graph -------------------------------------------------------------
def _functions_of(tensor):
    """Every Function in the graph that produced ``tensor``."""
    found, stack, seen = [], [tensor.creator], set()
    while stack:
        f = stack.pop()
        if f is None or id(f) in seen:
            continue
        seen.add(id(f))
        found.append(f)
        stack.extend(x.creator for x in f.inputs)
    return found


def _graphs_alive_at_each_forward(tmp_path, monkeypatch, name):
    """Before each training forward: how many Functions of the previous step's graph are still alive."""
    previous, alive = [], []
    forward = loop.forward_objective

    def spy(model, x, y):
        alive.append(sum(ref() is not None for ref in previous))
        previous.clear()
        logits, loss, balance = forward(model, x, y)
        previous.extend(weakref.ref(f) for f in _functions_of(loss))
        return logits, loss, balance

    monkeypatch.setattr(loop, "forward_objective", spy)
    gc.disable()  # only reference counting: a graph kept by a cycle would count as alive
    try:
        Trainer(_config(tmp_path, name)).fit()
    finally:
        gc.enable()
    return alive[1:]  # the first forward has no predecessor


def test_the_previous_steps_graph_is_released_before_the_next_forward(tmp_path, monkeypatch):
    alive = _graphs_alive_at_each_forward(tmp_path, monkeypatch, "released")
    assert alive == [0, 0, 0]  # two epochs of two steps: three forwards with a predecessor


def test_the_gated_heads_balance_loss_would_keep_the_graph_alive(tmp_path, monkeypatch):
    """Why ``release_graph`` exists: without it the head's stored balance loss holds the graph
    (every convolution's saved columns) through the next step's forward."""
    monkeypatch.setattr(loop, "release_graph", lambda model: None)
    alive = _graphs_alive_at_each_forward(tmp_path, monkeypatch, "kept")
    # within an epoch the graph survives; after validation it is gone (an eval forward drops the loss)
    assert [n > 0 for n in alive] == [True, False, True]


# ----- the "cupy" backend on the stand-in --------------------------------------------------------------
def test_fit_resume_across_backends_and_evaluate_on_the_stand_in(tmp_path):
    """Runs that change backend at the epoch boundary (``--resume --backend``), either way, give the
    metrics of a NumPy run; a checkpoint evaluates the same on either backend."""
    # float64: the backends sum in different orders (the NumPy kernels split a batch into parts for
    # the CPU threads; a device runs it whole), and in float32 two epochs of training amplify that
    # rounding to ~1e-4; in float64 it stays ~1e-12, so the comparison below can be tight.
    Trainer(_config(tmp_path, "numpy", dtype="float64")).fit()
    with simulated_gpu():
        Trainer(_config(tmp_path, "to_gpu", dtype="float64")).fit(until_epoch=1)
        moved = Trainer.resume(str(tmp_path / "to_gpu"), {"backend": "cupy"})
        assert "backend numpy -> cupy" in moved.notes[0]
        moved.fit()

        Trainer(_config(tmp_path, "to_cpu", backend="cupy", dtype="float64")).fit(until_epoch=1)
        Trainer.resume(str(tmp_path / "to_cpu"), {"backend": "numpy"}).fit()

        on_device = evaluate_checkpoint(str(tmp_path / "numpy"), "last", backend="cupy")
    on_host = evaluate_checkpoint(str(tmp_path / "to_gpu"), "last", backend="numpy")
    reference = _metrics(str(tmp_path / "numpy"))
    for name in ("to_gpu", "to_cpu"):
        rows = _metrics(str(tmp_path / name))
        assert [r.keys() for r in rows] == [r.keys() for r in reference], name
        for row, ref in zip(rows, reference):
            for key, value in ref.items():
                assert float(row[key]) == pytest.approx(float(value), rel=1e-9, abs=1e-12), (name, key)
    assert on_device["top1"] == on_host["top1"] == float(reference[-1]["val_top1"])
    assert on_device["loss"] == pytest.approx(on_host["loss"], rel=1e-9)
    assert on_host["loss"] == pytest.approx(float(reference[-1]["val_loss"]), rel=1e-9)


def _per_step_events(tmp_path, name, head_options):
    """The stand-in's events of each training step after the first (between two callbacks; no
    read falls inside: --log-every is larger than an epoch)."""
    marks = []
    with simulated_gpu():
        config = _config(
            tmp_path, name, backend="cupy", train_size=48, epochs=1, schedule=None, log_every=1000, **head_options
        )
        trainer = Trainer(config, callbacks=[lambda trainer, epoch, step: marks.append(len(counts.events))])
        with device_sim.counting() as counts:
            trainer.fit()
    return [counts.events[a:b] for a, b in zip(marks, marks[1:])]


def _syncs(events, inside=""):
    return [e for e in events if e.kind == "sync" and any(inside in frame for frame in e.stack)]


@pytest.mark.report
def test_a_training_step_between_reads_does_not_synchronise(tmp_path, capsys):
    """The loop's own reads happen only every --log-every steps: no step between two reads
    synchronises from gmsop_np/train/. The GAP network's step has no synchronisation at all;
    GM-SOP's has what the library's layers do (the dispatch reads its routing offsets)."""
    gap = _per_step_events(tmp_path, "gap", {"head": "gap", "num_components": None, "k": None})
    gated = _per_step_events(tmp_path, "gmsop", GATED)
    capsys.readouterr()  # the trainers' output
    assert len(gap) == len(gated) == 2
    for step in gap + gated:
        assert _syncs(step, "gmsop_np/train/") == []
    assert all(len(_syncs(step)) == 0 for step in gap)
    per_step = {len(_syncs(step)) for step in gated}
    assert len(per_step) == 1, "the same count every step"
    sites = sorted({e.site for e in _syncs(gated[0])})
    print(
        f"syncs per training step on the stand-in: tiny + GAP {len(_syncs(gap[0]))}, tiny + GM-SOP-4-2 "
        f"{per_step.pop()} ({', '.join(sites)}); from gmsop_np/train/: 0 (reads every --log-every steps)"
    )
