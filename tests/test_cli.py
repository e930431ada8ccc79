"""The ``gmsop`` command line as a user meets it, through a subprocess: exit status, what goes to
stdout / stderr / train.log, one-line errors that name the flag (and no traceback), clean stops
on divergence and Ctrl-C, resume, file modes, help. Runs are tiny (a few dozen images)."""

import fcntl
import json
import os
import pty
import re
import shutil
import signal
import stat
import struct
import subprocess
import sys
import termios
import threading
import tomllib

import pytest

import gmsop_np
from gmsop_np import cli
from gmsop_np.checkpoint import atomic_write
from gmsop_np.train import TrainConfig, Trainer
from gmsop_np.train.options import flag

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TINY = ["--train-size", "32", "--val-size", "16", "--batch-size", "16", "-N", "4", "-K", "2"]
NOISE = ("Traceback", "Exception ignored", "Warning")


def gmsop(*args, cwd, stderr=subprocess.PIPE, env=None, umask=-1, timeout=300):
    """Run ``gmsop ARGS`` (as ``python -m gmsop_np.cli``) in ``cwd``; a CompletedProcess."""
    inherited = ("GMSOP_NP_SIMULATE_GPU", "COLUMNS", "LINES")  # the test's choices, not the caller's
    environment = {k: v for k, v in os.environ.items() if k not in inherited}
    environment.update(PYTHONPATH=ROOT, **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "gmsop_np.cli", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env=environment,
        umask=umask,
        timeout=timeout,
    )


def _one_line_error(result, command="train"):
    """The process failed with exit status 2 and said one thing, on one line of stderr."""
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"gmsop {command}: error: "), result.stderr
    assert not any(word in result.stderr for word in NOISE)
    return lines[0]


def _is_png(path):
    with open(path, "rb") as handle:
        return handle.read(8) == PNG_SIGNATURE


def test_console_script_points_at_main():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as handle:
        project = tomllib.load(handle)["project"]
    assert project["scripts"]["gmsop"] == "gmsop_np.cli:main"
    # a plain `pip install .` runs `gmsop train`: no progress-bar package is needed
    assert not any("tqdm" in d for d in project["dependencies"] + project["optional-dependencies"]["app"])


# ----- errors: one line, the flag's name, before any run folder -------------------------------------
BAD_OPTIONS = [
    (["--alpha", "-5"], "--alpha (balance-loss weight) must be a finite number >= 0, got -5.0"),
    (["--head-arg", "foo=1"], "--head-arg: the head 'gmsop' has no option foo; its options: alpha,"),
    (["--head-arg", "noise=bogus"], "unknown noise mode 'bogus'; choose one of: shared, independent"),
    (["--head", "gap", "-N", "16"], "-N does not apply to the head 'gap' (its options: none)"),
    (["-K", "1"], "-K (components per sample; 2 <= k <= N = 16) must be between 2 and 16, got 1"),
    (["--batch-size", "0"], "--batch-size must be >= 1, got 0"),
    (["--log-every", "0"], "--log-every must be >= 1, got 0"),
    (["--dataset", "digits", "--train-size", "10"], "--train-size applies only to a generated dataset"),
    (["--dataset", "imagenet64"], "--dataset 'imagenet64' is read from files: give --data-dir, the folder"),
    (["--data-dir", "somewhere"], "--data-dir does not apply to the dataset 'textures': it is built in"),
    (["--schedule", "2,1", "--epochs", "4"], "--schedule 2,1 sums to 3 epochs but --epochs is 4; give one"),
    (["--momentum", "1"], "--momentum must be below 1, got 1.0"),
    (["--image-size", "9"], "--image-size must be a multiple of 8 (the backbone halves the map three times)"),
]


@pytest.mark.parametrize("args, message", BAD_OPTIONS, ids=[" ".join(a) for a, _ in BAD_OPTIONS])
def test_bad_options_stop_before_a_run_folder_with_one_line_naming_the_flag(tmp_path, args, message):
    result = gmsop("train", *args, "--out", "run", cwd=tmp_path)
    line = _one_line_error(result)
    assert message in line
    for api_name in ("batch_size", "log_every", "train_size", "data_dir", "head_options", "root="):
        assert api_name not in line
    assert result.stdout == "" and not os.path.exists(tmp_path / "run") and not os.path.exists(tmp_path / "runs")


def test_in_flags_rewrites_option_names_from_one_table():
    """Every TrainConfig field has a flag, taken from the option's declaration."""
    for name in TrainConfig.__dataclass_fields__:
        assert flag(name).startswith("-")
    assert cli._message(ValueError("weight_decay must be >= 0; see `image_size`")) == (
        "--weight-decay must be >= 0; see --image-size"
    )
    assert cli._message(ValueError("dataset is not a flag here")) == "--dataset is not a flag here"
    assert cli._message(ValueError("the word lr stays")) == "the word lr stays"
    assert cli._message(MemoryError("Unable to allocate 74.5 GiB")) == (
        "out of memory (Unable to allocate 74.5 GiB); try a smaller --batch-size, --image-size or --train-size"
    )
    assert cli._message(FileNotFoundError(2, "No such file or directory", "/proc/x")) == (
        "/proc/x: No such file or directory"
    )


# ----- a run: output, files, a second run, evaluation ------------------------------------------------
def test_a_run_prints_to_stdout_and_train_log_writes_files_with_the_umask_and_a_second_run_says_where(tmp_path):
    result = gmsop("train", *TINY, "--epochs", "2", cwd=tmp_path, umask=0o022)
    assert result.returncode == 0 and result.stderr == "", result.stderr  # not a terminal: no progress line
    lines = result.stdout.splitlines()
    run = tmp_path / "runs" / "textures-tiny-gmsop"
    assert lines[0].startswith("training tiny + GM-SOP-4-2 on textures (32 train / 16 val images, 4 classes)")
    assert lines[1].startswith("SGD lr 0.05 (momentum 0.9, weight decay 0.0005), schedule [2] epochs")
    assert re.fullmatch(
        r"epoch 1/2  lr 0\.05  train loss \S+ err \S+  val loss \S+ top-1 \S+  bal .*ETA \d+:\d\d", lines[2]
    )
    assert lines[3].startswith("epoch 2/2 ") and "ETA" not in lines[3] and "top-5" not in lines[3]  # 4 classes
    assert lines[4].startswith("finished: 2/2 epochs in ") and lines[4].endswith(
        f"Files in {run.relative_to(tmp_path)}"
    )
    log = (run / "train.log").read_text().splitlines()
    assert log[0].startswith("----- ") and log[0].endswith(
        f"gmsop_np {gmsop_np.__version__}, starting runs/textures-tiny-gmsop"
    )
    assert log[1:] == lines
    for name in ("config.json", "metrics.csv", "usage.csv", "last.npz", "best.npz", "train.log"):
        assert stat.S_IMODE(os.stat(run / name).st_mode) == 0o644, name

    again = gmsop("train", *TINY, "--epochs", "1", cwd=tmp_path, umask=0o077)
    assert again.returncode == 0
    assert (
        "runs/textures-tiny-gmsop holds an earlier run, so this run goes to runs/textures-tiny-gmsop-2 (choose the "
        "folder with --out; continue the earlier run with `gmsop train --out runs/textures-tiny-gmsop --resume`)"
    ) in again.stdout.splitlines()
    assert stat.S_IMODE(os.stat(tmp_path / "runs" / "textures-tiny-gmsop-2" / "last.npz").st_mode) == 0o600

    evaluated = gmsop("eval", str(run), "--checkpoint", "last", cwd=tmp_path)
    assert evaluated.returncode == 0 and evaluated.stderr == ""
    assert re.fullmatch(rf"{run}/last.npz: top-1 error \S+, loss \S+ on 16 val images\n", evaluated.stdout)
    assert json.loads((run / "eval_last.json").read_text())["images"] == 16


def test_atomic_write_gives_files_the_users_umask(tmp_path):
    previous = os.umask(0o027)
    try:
        atomic_write(tmp_path / "a.txt", lambda f: f.write("x"), text=True)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(os.stat(tmp_path / "a.txt").st_mode) == 0o640
    assert os.listdir(tmp_path) == ["a.txt"]  # no temporary file left behind


def _run_with_stderr_on_a_terminal(tmp_path, *args):
    """``gmsop ARGS`` with stdout a pipe and stderr a pseudo-terminal: (result, what the terminal got)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 200, 0, 0))  # 200 columns
    received = []

    def read():
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                return
            if not chunk:
                return
            received.append(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        result = gmsop(*args, cwd=tmp_path, stderr=slave)
    finally:
        os.close(slave)
        reader.join(timeout=10)
        os.close(master)
    return result, b"".join(received).decode()


def test_the_progress_line_is_drawn_only_on_a_terminal_and_needs_no_third_party_package(tmp_path):
    # tqdm made unimportable: the progress line is our own
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "tqdm.py").write_text("raise ImportError('tqdm is not installed')\n")
    args = ("train", *TINY, "--epochs", "1", "--log-every", "1")
    env_path = f"{blocker}{os.pathsep}{ROOT}"
    live, terminal = _run_with_stderr_on_a_terminal(tmp_path, *args, "--out", "live")
    assert live.returncode == 0
    assert "\r" not in live.stdout and "epoch 1/1  lr" in live.stdout  # stdout: lines only
    assert re.search(
        r"\repoch 1/1 \[#+\.*\] 1/2 loss \S+ err \S+ bal \S+ \| ETA \d+:\d\d, run \d+:\d\d \| \d+ img/s", terminal
    )
    assert "validating epoch 1/1 [" in terminal
    assert not any(word in terminal for word in NOISE)

    quiet, terminal = _run_with_stderr_on_a_terminal(tmp_path, *args, "--no-progress", "--out", "quiet")
    assert quiet.returncode == 0 and terminal == ""

    no_tqdm = subprocess.run(
        [sys.executable, "-m", "gmsop_np.cli", *args, "--out", "plain"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": env_path},
        timeout=300,
    )
    assert no_tqdm.returncode == 0 and no_tqdm.stderr == "", no_tqdm.stderr


def test_eval_errors_name_the_file(tmp_path):
    Trainer(
        TrainConfig(
            head="gap", train_size=16, val_size=16, batch_size=16, epochs=1, progress=False, out=str(tmp_path / "gap")
        )
    ).fit()
    Trainer(
        TrainConfig(
            num_components=4,
            k=2,
            train_size=16,
            val_size=16,
            batch_size=16,
            epochs=1,
            progress=False,
            out=str(tmp_path / "gm"),
        )
    ).fit()
    shutil.copy(tmp_path / "gm" / "best.npz", tmp_path / "gap" / "other.npz")
    line = _one_line_error(gmsop("eval", "gap/other.npz", cwd=tmp_path), "eval")
    assert "gap/other.npz does not fit the network that gap/config.json describes (tiny + GAP, 4 classes)" in line

    shutil.copytree(tmp_path / "gap", tmp_path / "broken")
    (tmp_path / "broken" / "config.json").write_text('{"options": {')
    line = _one_line_error(gmsop("eval", "broken", cwd=tmp_path), "eval")
    assert "broken/config.json is not valid JSON" in line
    (tmp_path / "broken" / "config.json").write_text('{"options": {"lr": "fast"}}')
    line = _one_line_error(gmsop("eval", "broken", cwd=tmp_path), "eval")
    assert line.endswith("broken/config.json: lr must be a number, got 'fast' (str)")
    line = _one_line_error(gmsop("eval", "gap", "--batch-size", "0", cwd=tmp_path), "eval")
    assert line.endswith("--batch-size must be >= 1, got 0")
    (tmp_path / "gap" / "best.npz").write_bytes(b"PK\x03\x04 truncated")
    line = _one_line_error(gmsop("eval", "gap", cwd=tmp_path), "eval")
    assert "gap/best.npz: not a readable gmsop_np checkpoint" in line


# ----- clean stops ------------------------------------------------------------------------------------
@pytest.mark.parametrize("lr, train_size", [("1e6", "32"), ("3", "48")])
def test_a_diverging_run_stops_cleanly(tmp_path, lr, train_size):
    """--lr 1e6 diverges in the first steps (found at a training-loss read); the default GM-SOP with
    --lr 3 first reaches huge but finite losses, then a NaN validation loss."""
    sizes = ["--train-size", train_size, "--val-size", "16", "--batch-size", "8"]
    result = gmsop("train", "--lr", lr, *sizes, "--out", "x", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gmsop train: stopped: the "), result.stderr
    in_training = r"training loss became NaN( \(balance loss NaN\))? in epoch 1, steps 1-4 \(4 steps"
    assert re.search(rf"({in_training}|validation loss after epoch \d+ is NaN)", lines[0])
    assert f"Start again with a smaller --lr (this run: {float(lr):g}) or --dtype float64." in lines[0]
    assert not any(word in result.stderr + result.stdout for word in NOISE)  # no RuntimeWarning spam
    assert (tmp_path / "x" / "train.log").read_text().splitlines()[-1] == "stopped: " + lines[0].split("stopped: ", 1)[
        1
    ]


def _interrupt(tmp_path, out, presses, *extra):
    """Start a run, wait for its header, press Ctrl-C ``presses`` times (0.5 s apart)."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gmsop_np.cli",
            "train",
            "--head",
            "gap",
            "--train-size",
            "512",
            "--val-size",
            "16",
            "--batch-size",
            "128",
            "--epochs",
            "1",
            "--out",
            out,
            *extra,
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": ROOT},
    )
    header = process.stdout.readline()
    for i in range(presses):
        if i:
            threading.Event().wait(0.5)
        process.send_signal(signal.SIGINT)
    out_rest, err = process.communicate(timeout=300)
    return process.returncode, header + out_rest, err


def test_ctrl_c_saves_and_resume_says_where_it_continues(tmp_path):
    code, out, err = _interrupt(tmp_path, "run", 1)
    assert code == 130 and not any(word in out + err for word in NOISE), err
    match = re.search(
        r"interrupted at epoch 1, step (\d) of 4: saved run/last.npz; continue with `gmsop train --out run --resume`",
        err,
    )
    assert match and (tmp_path / "run" / "last.npz").exists()
    step = int(match.group(1))
    resumed = gmsop("train", "--out", "run", "--resume", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert (
        f"resuming from run/last.npz, saved at epoch 1, step {step} of 4: training continues with step {step + 1}"
        in resumed.stdout
    )
    assert "finished: 1/1 epochs" in resumed.stdout


def test_a_second_ctrl_c_aborts_without_a_traceback(tmp_path):
    code, out, err = _interrupt(tmp_path, "run", 2)
    assert code == 130 and not any(word in out + err for word in NOISE), err
    assert "Ctrl-C: finishing this step, then saving a checkpoint (press again to abort)" in err


# ----- resume -----------------------------------------------------------------------------------------
def test_resume_extends_refuses_what_cannot_change_and_moves_between_backends(tmp_path):
    assert gmsop("train", *TINY, "--epochs", "1", "--out", "run", cwd=tmp_path).returncode == 0
    line = _one_line_error(gmsop("train", "--out", "run", "--resume", "--lr", "0.5", cwd=tmp_path))
    assert "--lr cannot change when resuming (the run has 0.05, given 0.5); only --epochs, --backend," in line
    line = _one_line_error(gmsop("train", "--out", "run", "--resume", "-K", "3", cwd=tmp_path))
    assert line.startswith("gmsop train: error: -K cannot change when resuming (the run has 2, given 3)")

    simulated = {"GMSOP_NP_SIMULATE_GPU": "1"}
    on_gpu = gmsop(
        "train", "--out", "run", "--resume", "--epochs", "2", "--backend", "cupy", cwd=tmp_path, env=simulated
    )
    assert on_gpu.returncode == 0, on_gpu.stderr
    assert "resuming from run/last.npz, saved at the end of epoch 1; backend numpy -> cupy" in on_gpu.stdout
    assert (
        "extended from 1 to 2 epochs: the last stage of the schedule grows from 1 to 2 epochs, so the 1 new "
        "epoch(s) run at its learning rate 0.05"
    ) in on_gpu.stdout
    back = gmsop(
        "train", "--out", "run", "--resume", "--epochs", "3", "--backend", "numpy", cwd=tmp_path, env=simulated
    )
    assert back.returncode == 0 and "backend cupy -> numpy" in back.stdout and "finished: 3/3 epochs" in back.stdout
    done = gmsop("train", "--out", "run", "--resume", cwd=tmp_path)
    assert "the run is already finished (3/3 epochs); give a larger --epochs to extend it" in done.stdout


# ----- help -------------------------------------------------------------------------------------------
def test_help_shows_every_option_with_its_text_and_the_examples(tmp_path):
    result = gmsop("train", "--help", cwd=tmp_path)
    assert result.returncode == 0
    text = " ".join(result.stdout.split())  # argparse wraps lines
    for name, field in TrainConfig.__dataclass_fields__.items():
        assert flag(name) in text and " ".join(field.metadata["help"].split()) in text, name
    for example in cli.TRAIN_EXAMPLES.splitlines():
        assert " ".join(example.split()) in text
    assert "Exit status: 0 done" in text and "--momentum MOMENTUM SGD momentum (default: 0.9)" in text
    version = gmsop("--version", cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.strip() == f"gmsop_np {gmsop_np.__version__}"


# ----- the other commands -----------------------------------------------------------------------------
def test_eval_and_plot_in_process(tmp_path, capsys):
    run = str(tmp_path / "run")
    assert cli.main(["train", *TINY, "--epochs", "1", "--out", run, "--no-progress"]) == 0
    capsys.readouterr()
    assert cli.main(["eval", run]) == 0
    assert "top-1 error" in capsys.readouterr().out
    pytest.importorskip("matplotlib")
    assert cli.main(["plot", run]) == 0
    printed = capsys.readouterr().out.split()
    assert sorted(os.path.basename(p) for p in printed) == ["error.png", "loss.png", "usage.png"]
    assert all(_is_png(p) for p in printed)


def test_plot_and_eval_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert cli.main([]) == 2
    assert cli.main(["eval", str(tmp_path)]) == 2
    assert "config.json" in capsys.readouterr().err
    assert cli.main(["plot", str(tmp_path)]) == 2
    assert "metrics.csv" in capsys.readouterr().err
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
    assert cli.main(["experiment", "figure2", "--seeds", "1", "--workers", "1", *args]) == 0
    assert _is_png(os.path.join(out, "figure2.png"))
    with open(os.path.join(out, "figure2.md")) as handle:
        rows = [line for line in handle.read().splitlines() if re.match(r"\| \d", line)]
    assert [r.split("|")[1].strip() for r in rows] == ["0", "100"]
    for row in rows:  # 16 components, each counted; 32 images x K=4
        counts = [int(c) for c in row.split("|")[6].split()]
        assert len(counts) == 16 and sum(counts) == 32 * 4
    assert "NOT CHECKED" in capsys.readouterr().out  # one epoch of 32 images learns nothing: no verdict

    out = str(tmp_path / "tab2")
    args[1] = out
    assert cli.main(["experiment", "table2", "--heads", "gap,srsop", "--seeds", "2", "--workers", "1", *args]) == 0
    with open(os.path.join(out, "table2.md")) as handle:
        text = handle.read()
    assert "| GAP |" in text and "| SR-SOP |" in text and "representation" in text
