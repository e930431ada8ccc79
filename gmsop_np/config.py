"""Global switches: gradient recording and train/eval mode.

Each switch is a context manager *and* a decorator::

    with gs.no_grad():            # nothing recorded for backward
        y = model(x)

    @gs.no_grad()
    def evaluate(model, x): ...

    with gs.eval_mode():          # BatchNorm uses running statistics, no dropout,
        y = model(x)              # no gating noise
"""

from __future__ import annotations

import contextlib
import threading

__all__ = [
    "Config",
    "using_config",
    "no_grad",
    "enable_grad",
    "train_mode",
    "eval_mode",
    "is_grad_enabled",
    "is_training",
]


class _ConfigState(threading.local):
    def __init__(self):
        self.enable_backprop = True  # record the graph for backward
        self.train = True  # training behaviour of BN / dropout / gating noise


Config = _ConfigState()


class using_config(contextlib.ContextDecorator):
    """Temporarily set ``Config.<name> = value`` (context manager or decorator)."""

    def __init__(self, name: str, value):
        if not hasattr(Config, name):
            raise AttributeError(f"unknown config option {name!r}")
        self.name, self.value = name, value
        self._saved = []

    def __enter__(self):
        self._saved.append(getattr(Config, self.name))
        setattr(Config, self.name, self.value)
        return self

    def __exit__(self, *exc):
        setattr(Config, self.name, self._saved.pop())
        return False


def no_grad():
    """Do not record operations for backward (inference, optimizer updates)."""
    return using_config("enable_backprop", False)


def enable_grad():
    """Record operations again inside a ``no_grad`` block."""
    return using_config("enable_backprop", True)


def train_mode():
    """Training behaviour: batch statistics, dropout, gating noise."""
    return using_config("train", True)


def eval_mode():
    """Evaluation behaviour: running statistics, no dropout, no gating noise."""
    return using_config("train", False)


def is_grad_enabled() -> bool:
    return Config.enable_backprop


def is_training() -> bool:
    return Config.train
