"""Checkpoints: model + optimizer + schedule + RNG state in ONE ``.npz`` file, written atomically.

File layout (an ordinary NumPy ``.npz`` archive, readable with ``numpy.load``):

* ``model/<dotted.name>``          parameters and buffers (``model.state_dict()``)
* ``optimizer/<path>``             array leaves of ``optimizer.state_dict()`` (momentum buffers)
* ``scheduler/<path>``             array leaves of the scheduler state (normally none)
* ``__meta__``                     one JSON string: format tag, version, every non-array value
  (hyper-parameters, epoch, RNG state, ``extra``); arrays are referenced as ``{"__array__": key}``.

All arrays are host (NumPy) copies, so a checkpoint saved while training on
the GPU loads on a CPU-only machine. No pickle is used: loading a file never
runs code from it.

Atomic save: the archive is written to a temporary file in the same directory,
flushed and ``fsync``-ed, then renamed over the target with ``os.replace``
(atomic on POSIX and Windows). A crash mid-save leaves the previous
checkpoint intact (plus at worst a stray ``.tmp`` file, which is removed when
the exception is seen).
"""

from __future__ import annotations

import json
import os
import secrets
import zipfile
from typing import TYPE_CHECKING

import numpy as np

from .backend import is_array, to_cpu

if TYPE_CHECKING:  # for the annotations only: checkpoints sit below the layers that define modules
    from .nn.module import Module

__all__ = ["save_checkpoint", "load_checkpoint", "CheckpointError", "FORMAT", "VERSION"]

FORMAT = "gmsop_np-checkpoint"
VERSION = 1
_META = "__meta__"


class CheckpointError(ValueError):
    """A file that is not a readable gmsop_np checkpoint (truncated, foreign, wrong version)."""


# ----- nested state <-> (JSON, arrays) --------------------------------------------------------
def _split(value, prefix, arrays):
    """Replace every array leaf of ``value`` by ``{"__array__": key}`` and collect it in ``arrays``."""
    if is_array(value):
        arrays[prefix] = np.array(to_cpu(value), copy=True)
        return {"__array__": prefix}
    if isinstance(value, dict):
        return {str(k): _split(v, f"{prefix}/{k}", arrays) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_split(v, f"{prefix}/{i}", arrays) for i, v in enumerate(value)]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _join(value, archive):
    """Inverse of ``_split``: put the arrays back from the open archive."""
    if isinstance(value, dict):
        if set(value) == {"__array__"}:
            return archive[value["__array__"]]
        return {k: _join(v, archive) for k, v in value.items()}
    if isinstance(value, list):
        return [_join(v, archive) for v in value]
    return value


def _rng_state(rng_state):
    """A Generator is stored as its bit-generator state (a JSON-able dict)."""
    if isinstance(rng_state, np.random.Generator):
        return rng_state.bit_generator.state
    return rng_state


# ----- saving ---------------------------------------------------------------------------------
def _write_npz(fileobj, arrays) -> None:
    """Write the archive to an open binary file (a separate function so tests can simulate a crash)."""
    np.savez(fileobj, **arrays)


def save_checkpoint(
    path: str | os.PathLike, model: Module, optimizer=None, scheduler=None, rng_state=None, extra=None
) -> str:
    """Save everything needed to resume training into one ``.npz`` at ``path`` (atomically).

    ``rng_state``: a ``numpy.random.Generator`` (its state is saved) or any JSON-able value.
    ``extra``: any JSON-able value (epoch, metrics, configuration, ...).
    Returns the path written.
    """
    path = os.fspath(path)
    arrays = {f"model/{k}": v for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "version": VERSION, "model_class": type(model).__name__}
    meta["optimizer"] = None if optimizer is None else _split(optimizer.state_dict(), "optimizer", arrays)
    meta["scheduler"] = None if scheduler is None else _split(scheduler.state_dict(), "scheduler", arrays)
    meta["rng_state"] = _split(_rng_state(rng_state), "rng", arrays)
    meta["extra"] = _split(extra, "extra", arrays)
    try:
        arrays[_META] = np.array(json.dumps(meta))
    except TypeError as exc:
        raise TypeError(f"checkpoint metadata must be JSON-serialisable (extra / rng_state): {exc}") from exc

    return atomic_write(path, lambda f: _write_npz(f, arrays))


def atomic_write(path, write, text=False) -> str:
    """Create or replace ``path`` atomically: ``write(file)`` fills a temporary file in the
    same directory, which is flushed, ``fsync``-ed and renamed over ``path``.

    A crash (or an exception from ``write``) leaves the previous file intact and removes
    the temporary one. The file gets the permissions of any new file (0o666 less the
    user's umask), as ``open(path, "w")`` would give it. ``text=True`` opens the file
    as UTF-8 text without newline translation (CSV, JSON); otherwise it is binary.
    Returns ``path``.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = _create_temporary(directory, os.path.basename(path))
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") if text else os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the rename makes them visible
        os.replace(tmp, path)  # atomic: readers see the old file or the new one, never half
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    _fsync_directory(directory)
    return path


def _create_temporary(directory, name):
    """A new file ``.<name>.<random>.tmp`` in ``directory``: ``(fd, path)``.

    Not ``tempfile.mkstemp``: it creates files with mode 0o600 whatever the umask, and
    the rename would carry that mode over to ``path``. Here the kernel applies the umask
    to 0o666, as for any new file; ``O_EXCL`` makes the name ours alone.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = os.path.join(directory, f".{name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file for {name} in {directory}")


def _fsync_directory(directory) -> None:
    """Make the rename itself durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ----- loading --------------------------------------------------------------------------------
def _open(path):
    try:
        archive = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"no checkpoint file {path}") from None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise CheckpointError(
            f"{path}: not a readable gmsop_np checkpoint (truncated, corrupted or not an .npz archive): {exc}"
        ) from exc
    if not isinstance(archive, np.lib.npyio.NpzFile) or _META not in archive.files:
        raise CheckpointError(
            f"{path}: not a gmsop_np checkpoint (no {_META!r} entry); was it saved "
            "with gmsop_np.checkpoint.save_checkpoint?"
        )
    return archive


def load_checkpoint(path: str | os.PathLike, model: Module, optimizer=None, scheduler=None) -> dict:
    """Restore ``model`` (and optimizer / scheduler, if given) from ``path``.

    Arrays are copied into the existing parameters, so a model already moved to
    the GPU stays there. Returns ``{"rng_state": ..., "extra": ..., "epoch": ...}``
    (``epoch`` from the scheduler state when one was saved, else None).
    """
    path = os.fspath(path)
    with _open(path) as archive:
        try:
            meta = json.loads(str(archive[_META]))
            if meta.get("format") != FORMAT:
                raise CheckpointError(f"{path}: format tag {meta.get('format')!r}, expected {FORMAT!r}")
            if meta.get("version") != VERSION:
                raise CheckpointError(f"{path}: checkpoint version {meta.get('version')}, this code reads {VERSION}")
            state = {k[len("model/") :]: archive[k] for k in archive.files if k.startswith("model/")}
            optim_state = None if meta["optimizer"] is None else _join(meta["optimizer"], archive)
            sched_state = None if meta["scheduler"] is None else _join(meta["scheduler"], archive)
            rng_state = _join(meta["rng_state"], archive)
            extra = _join(meta["extra"], archive)
        except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as exc:
            if isinstance(exc, CheckpointError):
                raise
            raise CheckpointError(f"{path}: checkpoint is damaged and cannot be read: {exc!r}") from exc

    model.load_state_dict(state, strict=True)
    if optimizer is not None:
        if optim_state is None:
            raise CheckpointError(f"{path}: has no optimizer state (it was saved without an optimizer)")
        optimizer.load_state_dict(optim_state)
    if scheduler is not None:
        if sched_state is None:
            raise CheckpointError(f"{path}: has no scheduler state (it was saved without a scheduler)")
        scheduler.load_state_dict(sched_state)
    return {"rng_state": rng_state, "extra": extra, "epoch": None if sched_state is None else sched_state.get("epoch")}
