"""Stochastic gradient descent with momentum and weight decay, and the step LR schedule.

SGD follows PyTorch's ``torch.optim.SGD`` exactly (dampening 0), so results
can be compared line by line::

    g   = grad + wd * p                      (L2 weight decay folded into the gradient)
    buf = momentum * buf + g                 (buf = g at the first step)
    d   = g + momentum * buf   if nesterov   else   buf
    p   = p - lr * d

Updates are done in place on ``p.data`` with array ops (NumPy or CuPy, the
parameter's own backend), outside the autodiff graph.

Weight decay on BN parameters and biases is often switched off. Pass
``no_decay=is_bn_or_bias`` (or any predicate ``(name, param) -> bool``) with
``model.named_parameters()`` to put those parameters in a group with
``weight_decay = 0``. Parameter groups can also be given explicitly, as in
PyTorch: ``SGD([{"params": [...]}, {"params": [...], "weight_decay": 0}], lr=0.1)``.
"""

from __future__ import annotations

import numpy as np

from ._checks import check_int, check_number
from .backend import backend_of, get_array_module, to_cpu, to_gpu
from .config import no_grad
from .core import Tensor

__all__ = ["SGD", "MultiStepLR", "is_bn_or_bias"]


def is_bn_or_bias(name, param) -> bool:
    """True for 1-D parameters: BN gamma/beta and biases (the usual weight-decay exclusions)."""
    return param.ndim <= 1


def _check_hyper(lr, momentum, weight_decay, nesterov):
    check_number(lr, "learning rate lr", 0.0)
    check_number(momentum, "momentum", 0.0, 1.0)
    if momentum >= 1.0:
        raise ValueError(f"momentum must be below 1 (1 never forgets a gradient), got {momentum}")
    check_number(weight_decay, "weight_decay", 0.0)
    if nesterov and momentum == 0:
        raise ValueError("nesterov=True needs momentum > 0")


def _named(params):
    """Normalise an iterable of Parameters or (name, Parameter) pairs to (name, Parameter) pairs."""
    named = []
    for i, item in enumerate(params):
        name, p = item if isinstance(item, tuple) else (f"param{i}", item)
        if not isinstance(p, Tensor) or not p.requires_grad:
            raise TypeError(
                f"optimizer got {type(p).__name__} for {name!r}; pass model.parameters() "
                "or model.named_parameters() (tensors that require grad)"
            )
        named.append((name, p))
    return named


def _like(array, like):
    """``array`` on the backend of ``like`` (momentum buffers follow their parameter after to_gpu)."""
    if backend_of(array) == backend_of(like):
        return array
    return to_gpu(array) if backend_of(like) == "cupy" else to_cpu(array)


class SGD:
    """SGD with momentum, L2 weight decay and optional Nesterov momentum (PyTorch semantics).

    Parameters
    ----------
    params : Parameters, ``(name, Parameter)`` pairs (``model.named_parameters()``) or a list of
        group dicts ``{"params": [...], "lr": ..., "weight_decay": ...}``
    lr, momentum, weight_decay, nesterov : defaults for every group
    no_decay : optional predicate ``(name, param) -> bool``; matching parameters go to a second
        group with ``weight_decay = 0`` (e.g. ``is_bn_or_bias``)
    """

    def __init__(self, params, lr, momentum=0.9, weight_decay=0.0, nesterov=False, no_decay=None):
        _check_hyper(lr, momentum, weight_decay, nesterov)
        self.defaults = dict(
            lr=float(lr), momentum=float(momentum), weight_decay=float(weight_decay), nesterov=bool(nesterov)
        )
        self.param_groups = self._make_groups(list(params), no_decay)
        seen = set()
        for p in self._all_params():
            if id(p) in seen:
                raise ValueError("a parameter appears twice in the optimizer's parameter list")
            seen.add(id(p))
        self.state = {}  # id(param) -> momentum buffer (array on the parameter's backend)

    def _make_groups(self, params, no_decay):
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        if isinstance(params[0], dict):
            if no_decay is not None:
                raise ValueError("give either parameter groups or no_decay, not both")
            groups = []
            for g in params:
                if "params" not in g:
                    raise ValueError(f"parameter group without 'params': keys {sorted(g)}")
                unknown = set(g) - set(self.defaults) - {"params"}
                if unknown:
                    raise ValueError(f"unknown parameter-group options {sorted(unknown)}")
                named = _named(g["params"])
                group = {**self.defaults, **{k: v for k, v in g.items() if k != "params"}}
                _check_hyper(group["lr"], group["momentum"], group["weight_decay"], group["nesterov"])
                group.update(params=[p for _, p in named], names=[n for n, _ in named])
                groups.append(group)
            return groups
        named = _named(params)
        split = (
            [named, []]
            if no_decay is None
            else [[(n, p) for n, p in named if not no_decay(n, p)], [(n, p) for n, p in named if no_decay(n, p)]]
        )
        groups = []
        for members, wd in zip(split, (self.defaults["weight_decay"], 0.0)):
            if members:
                groups.append(
                    {
                        **self.defaults,
                        "weight_decay": wd,
                        "params": [p for _, p in members],
                        "names": [n for n, _ in members],
                    }
                )
        return groups

    def _all_params(self):
        return [p for g in self.param_groups for p in g["params"]]

    @property
    def lr(self) -> float:
        """The learning rate of the first group (setting it sets every group)."""
        return self.param_groups[0]["lr"]

    @lr.setter
    def lr(self, value):
        for g in self.param_groups:
            g["lr"] = float(value)

    def zero_grad(self) -> None:
        for p in self._all_params():
            p.grad = None

    @no_grad()
    def step(self) -> None:
        """One update of every parameter that has a gradient (in place on ``p.data``)."""
        for group in self.param_groups:
            lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad.data
                if g.shape != p.shape:
                    raise RuntimeError(f"gradient of shape {g.shape} for a parameter of shape {p.shape}")
                if wd:
                    g = g + wd * p.data  # g = grad + wd * p
                if mu:
                    buf = self.state.get(id(p))
                    if buf is None:
                        buf = g.astype(p.dtype, copy=True)  # first step: buf = g
                    else:
                        buf = _like(buf, p.data)
                        buf *= mu  # buf = mu * buf + g
                        buf += g
                    self.state[id(p)] = buf
                    g = g + mu * buf if group["nesterov"] else buf
                p.data -= (lr * g).astype(p.dtype, copy=False)  # p = p - lr * d

    # ----- saving ---------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Hyper-parameters per group and the momentum buffers (NumPy copies) by flat index."""
        groups = [
            {k: g[k] for k in ("lr", "momentum", "weight_decay", "nesterov")}
            | {"num_params": len(g["params"]), "names": list(g["names"])}
            for g in self.param_groups
        ]
        buffers = {
            str(i): np.array(to_cpu(self.state[id(p)]), copy=True)
            for i, p in enumerate(self._all_params())
            if id(p) in self.state
        }
        return {"param_groups": groups, "momentum_buffers": buffers}

    def load_state_dict(self, state) -> None:
        """Restore hyper-parameters and momentum buffers saved by ``state_dict``."""
        groups = state["param_groups"]
        mine = [len(g["params"]) for g in self.param_groups]
        theirs = [int(g["num_params"]) for g in groups]
        if mine != theirs:
            raise ValueError(
                f"optimizer state has groups of sizes {theirs}, this optimizer {mine}: "
                "build the optimizer the same way (same model, same no_decay) before loading"
            )
        params = self._all_params()
        new_state = {}
        for key, value in state["momentum_buffers"].items():
            p = params[int(key)]
            if tuple(value.shape) != p.shape:
                raise ValueError(f"momentum buffer {key} has shape {tuple(value.shape)}, parameter {p.shape}")
            xp = get_array_module(p.data)
            new_state[id(p)] = xp.asarray(np.asarray(to_cpu(value)), dtype=p.dtype).copy()
        for g, saved in zip(self.param_groups, groups):
            for k in ("lr", "momentum", "weight_decay", "nesterov"):
                g[k] = type(self.defaults[k])(saved[k])
        self.state = new_state


class MultiStepLR:
    """Step schedule: ``lr = base_lr * gamma**s`` during stage ``s`` of ``epochs_per_stage``.

    ``MultiStepLR(opt, [40, 10, 5, 5], base_lr=0.1)`` gives 0.1 for epochs 0-39, 0.01 for
    40-49, 0.001 for 50-54 and 1e-4 for 55-59 (the paper's GM-SOP schedule). Call
    ``step()`` once at the END of every epoch; after the last stage the last rate is kept.
    ``base_lr=None`` keeps each group's current learning rate as its base.
    """

    def __init__(self, optimizer, epochs_per_stage=(40, 10, 5, 5), base_lr=0.1, gamma=0.1):
        if not isinstance(epochs_per_stage, (list, tuple)) or not epochs_per_stage:
            raise TypeError(f"epochs_per_stage must be a non-empty list of epochs, got {epochs_per_stage!r}")
        for e in epochs_per_stage:
            check_int(e, "each entry of epochs_per_stage", 1)
        check_number(gamma, "gamma", 0.0, 1.0, above=True)
        if base_lr is not None:
            check_number(base_lr, "base_lr", 0.0)
        self.optimizer = optimizer
        self.epochs_per_stage = [int(e) for e in epochs_per_stage]
        self.gamma = float(gamma)
        self.base_lrs = [float(g["lr"]) if base_lr is None else float(base_lr) for g in optimizer.param_groups]
        self.epoch = 0
        self._apply()

    @property
    def total_epochs(self) -> int:
        return sum(self.epochs_per_stage)

    def stage(self, epoch=None) -> int:
        """Index of the stage that ``epoch`` (default: the current one) falls in."""
        epoch = self.epoch if epoch is None else epoch
        boundaries = np.cumsum(self.epochs_per_stage)[:-1]  # e.g. [40, 50, 55]
        return int(np.searchsorted(boundaries, epoch, side="right"))

    def get_lr(self, epoch=None) -> list:
        """Learning rate of every group at ``epoch``."""
        factor = self.gamma ** self.stage(epoch)
        return [base * factor for base in self.base_lrs]

    def _apply(self):
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = lr

    def step(self) -> None:
        """Advance one epoch and set the optimizer's learning rate(s)."""
        self.epoch += 1
        self._apply()

    def extend_last_stage(self, epochs: int) -> None:
        """Add ``epochs`` to the last stage (a longer run continues at the final learning rate)."""
        self.epochs_per_stage[-1] += int(epochs)
        self._apply()

    def state_dict(self) -> dict:
        return {
            "epoch": self.epoch,
            "base_lrs": list(self.base_lrs),
            "epochs_per_stage": list(self.epochs_per_stage),
            "gamma": self.gamma,
        }

    def load_state_dict(self, state) -> None:
        self.epoch = int(state["epoch"])
        self.base_lrs = [float(x) for x in state["base_lrs"]]
        self.epochs_per_stage = [int(e) for e in state["epochs_per_stage"]]
        self.gamma = float(state["gamma"])
        self._apply()
