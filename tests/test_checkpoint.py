"""Checkpoints: exact round trip (outputs and the next optimizer step), atomic save, bad files."""

import os

import numpy as np
import pytest

import gmsop_np as gs
import gmsop_np.checkpoint as ckpt
import gmsop_np.functional as F
from gmsop_np.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from gmsop_np.models import ResNet
from gmsop_np.optim import SGD, MultiStepLR, is_bn_or_bias


def _setup(seed):
    model = ResNet((1, 1, 1, 1), (4, 4, 8, 8), num_classes=3, input_size=8, seed=seed)
    opt = SGD(model.named_parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, no_decay=is_bn_or_bias)
    sched = MultiStepLR(opt, epochs_per_stage=[1, 1, 2], base_lr=0.1)
    return model, opt, sched


def _batch(seed):
    rng = np.random.default_rng(seed)
    return gs.Tensor(rng.standard_normal((4, 3, 8, 8)).astype(np.float32)), rng.integers(0, 3, 4)


def _train_step(model, opt, batch):
    x, y = batch
    loss = F.softmax_cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()


def test_round_trip_restores_outputs_and_next_step(tmp_path):
    model, opt, sched = _setup(seed=0)
    for i in range(2):
        _train_step(model, opt, _batch(i))
        sched.step()
    data_rng = np.random.default_rng(42)
    data_rng.random(5)
    path = save_checkpoint(
        tmp_path / "ck.npz",
        model,
        opt,
        sched,
        rng_state=data_rng,
        extra={"epoch": 2, "best_top1": 0.5, "history": [1.0, 0.5]},
    )

    other, opt2, sched2 = _setup(seed=99)  # different weights, fresh optimizer
    info = load_checkpoint(path, other, opt2, sched2)
    assert info["extra"] == {"epoch": 2, "best_top1": 0.5, "history": [1.0, 0.5]} and info["epoch"] == 2
    assert sched2.epoch == 2 and opt2.lr == pytest.approx(opt.lr)
    restored = np.random.default_rng()
    restored.bit_generator.state = info["rng_state"]
    np.testing.assert_array_equal(restored.random(3), data_rng.random(3))

    x, _ = _batch(7)
    model.eval(), other.eval()
    with gs.no_grad():
        np.testing.assert_array_equal(model(x).data, other(x).data)
    model.train(), other.train()
    for m, o in ((model, opt), (other, opt2)):  # momentum buffers restored: same next step
        _train_step(m, o, _batch(3))
    for (k, a), b in zip(model.state_dict().items(), other.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=k)


def test_crash_mid_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    model, opt, sched = _setup(seed=0)
    path = tmp_path / "ck.npz"
    save_checkpoint(path, model, opt)
    saved = model.state_dict()
    _train_step(model, opt, _batch(0))  # the model moves on ...

    def crashing_writer(fileobj, arrays):  # ... and the next save dies half way
        fileobj.write(b"PK\x03\x04 half an archive")
        raise OSError("simulated crash: disk full")

    monkeypatch.setattr(ckpt, "_write_npz", crashing_writer)
    with pytest.raises(OSError, match="simulated crash"):
        save_checkpoint(path, model, opt)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["ck.npz"]  # no temporary file left behind
    fresh, fresh_opt, _ = _setup(seed=5)
    load_checkpoint(path, fresh, fresh_opt)  # the previous checkpoint is intact
    for k, v in fresh.state_dict().items():
        np.testing.assert_array_equal(v, saved[k], err_msg=k)


def test_truncated_foreign_and_missing_files(tmp_path):
    model, opt, _ = _setup(seed=0)
    good = save_checkpoint(tmp_path / "good.npz", model, opt)
    blob = open(good, "rb").read()
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match="truncated.npz"):
        load_checkpoint(truncated, model)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"this is not a zip archive at all")
    with pytest.raises(CheckpointError, match="garbage.npz"):
        load_checkpoint(garbage, model)
    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, weights=np.zeros(3))
    with pytest.raises(CheckpointError, match="foreign.npz.*not a gmsop_np checkpoint"):
        load_checkpoint(foreign, model)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "absent.npz", model)


def test_wrong_model_or_missing_parts(tmp_path):
    model, opt, sched = _setup(seed=0)
    path = save_checkpoint(tmp_path / "ck.npz", model)  # model only
    with pytest.raises(CheckpointError, match="no optimizer state"):
        load_checkpoint(path, model, opt)
    more_classes = ResNet((1, 1, 1, 1), (4, 4, 8, 8), num_classes=5, input_size=8)
    with pytest.raises(ValueError, match=r"shape mismatch for head\.fc\.W: checkpoint \(3, 8\) vs model \(5, 8\)"):
        load_checkpoint(path, more_classes)
    deeper = ResNet((1, 1, 1, 2), (4, 4, 8, 8), num_classes=3, input_size=8)
    with pytest.raises(KeyError, match="missing keys.*stages.3.1"):
        load_checkpoint(path, deeper)
    with pytest.raises(TypeError, match="JSON"):
        save_checkpoint(tmp_path / "bad.npz", model, extra={"f": object()})
    assert sorted(os.listdir(tmp_path)) == ["ck.npz"]


def test_checkpoint_is_plain_npz_with_host_arrays(tmp_path, xp):
    with gs.using_backend("numpy"):
        model, opt, _ = _setup(seed=0)
    if xp is not np:
        model.to_gpu()
    x, labels = _batch(0)
    _train_step(model, opt, (gs.Tensor(xp.asarray(x.data)), xp.asarray(labels)))  # the batch on the model's device
    path = save_checkpoint(tmp_path / "ck.npz", model, opt)
    with np.load(path, allow_pickle=False) as archive:  # readable without gmsop_np
        assert "__meta__" in archive.files and "model/stem.0.W" in archive.files
        assert any(k.startswith("optimizer/momentum_buffers/") for k in archive.files)
    with gs.using_backend("numpy"):
        cpu_model, _, _ = _setup(seed=1)
    load_checkpoint(path, cpu_model)  # a GPU checkpoint loads on the CPU
    for k, v in cpu_model.state_dict().items():
        np.testing.assert_array_equal(v, model.state_dict()[k], err_msg=k)
