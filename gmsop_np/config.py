"""Global switches: gradient recording and debug checks.

Each switch is a context manager *and* a decorator::

    with gs.no_grad():            # nothing recorded for backward
        y = model(x)

    @gs.no_grad()
    def evaluate(model, x): ...

    with gs.debug():              # also check values: NaN/Inf, trace signs, label and index ranges
        loss = objective(model(x), y, model.balance_loss)

Training versus evaluation behaviour (batch statistics, dropout, gating noise)
is not a global switch: it belongs to the model, ``model.train()`` /
``model.eval()`` (``gmsop_np.nn.Module``), and functions take ``training=``.

Debug mode (``gs.debug()``, or the environment variable ``GMSOP_NP_DEBUG=1``,
or ``gmsop train --debug``) turns on the checks that must *read* array values
(see ``gmsop_np/_checks.py`` for the policy). They are off by default because
on a GPU every such read is a device->host synchronisation that stalls the
pipeline; shape and dtype checks are always on.
"""

from __future__ import annotations

import contextlib
import os
import threading

__all__ = ["Config", "using_config", "no_grad", "enable_grad", "is_grad_enabled", "debug", "is_debug"]


class _ConfigState(threading.local):
    def __init__(self):
        self.enable_backprop = True  # record the graph for backward
        self.debug = os.environ.get("GMSOP_NP_DEBUG", "") not in ("", "0")  # value checks (see _checks.py)


Config = _ConfigState()


class using_config(contextlib.ContextDecorator):
    """Temporarily set ``Config.<name> = value`` (context manager or decorator)."""

    def __init__(self, name: str, value):
        if not hasattr(Config, name):
            raise AttributeError(f"unknown config option {name!r}; known: enable_backprop, debug")
        self.name, self.value = name, value
        self._saved = []

    def __enter__(self):
        self._saved.append(getattr(Config, self.name))
        setattr(Config, self.name, self.value)
        return self

    def __exit__(self, *exc):
        setattr(Config, self.name, self._saved.pop())
        return False


def no_grad() -> using_config:
    """Do not record operations for backward (inference, optimizer updates)."""
    return using_config("enable_backprop", False)


def enable_grad() -> using_config:
    """Record operations again inside a ``no_grad`` block."""
    return using_config("enable_backprop", True)


def debug(enabled: bool = True) -> using_config:
    """Check values too (NaN/Inf, trace signs, label and index ranges); see ``_checks.py``.

    >>> with debug():
    ...     is_debug()
    True
    >>> is_debug()
    False
    """
    return using_config("debug", bool(enabled))


def is_grad_enabled() -> bool:
    return Config.enable_backprop


def is_debug() -> bool:
    return Config.debug
