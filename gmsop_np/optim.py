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


class _FlatStorage:
    """Every parameter of an optimizer as a view into ONE flat array, the momentum buffers likewise.

    Then an SGD step updates all the parameters of a group with a handful of whole-array
    operations (about six) instead of six per parameter: on a GPU each operation is a kernel
    launch, and a ResNet-18 has 62 parameters. The parameters stay ordinary Parameters;
    only their ``.data`` becomes a view (``p.data = flat[a:b].reshape(p.shape)``), so in-place
    writes (``load_state_dict``, ``p.data -= ...``) reach the flat array. Replacing a ``.data``
    (``module.to_gpu()``, ``astype``, ``p.data = ...``) is noticed at the next step, which then
    builds the storage again from the current values.
    """

    def __init__(self, params, momentum_of):
        first = params[0].data
        for p in params:
            if p.dtype != first.dtype or backend_of(p.data) != backend_of(first):
                raise TypeError(
                    "SGD keeps all its parameters in one flat array, so they must share dtype and backend; "
                    f"got {first.dtype} on {backend_of(first)} and {p.dtype} on {backend_of(p.data)}. "
                    "Convert the model first (model.astype(...), model.to_gpu()) or use one optimizer per dtype."
                )
        xp = get_array_module(first)
        sizes = [p.size for p in params]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).tolist()
        self.data = xp.concatenate([p.data.ravel() for p in params])
        self.momentum = xp.zeros_like(self.data)
        self.views = []
        for p, a, b in zip(params, self.offsets[:-1], self.offsets[1:]):
            p.data = self.data[a:b].reshape(p.shape)
            self.views.append(p.data)
            previous = momentum_of(p)
            if previous is not None:  # carried over (the parameters moved): on the new backend and dtype
                self.momentum[a:b] = _like(previous, first).reshape(-1).astype(first.dtype, copy=False)

    def holds(self, params) -> bool:
        """Whether every parameter's ``.data`` is still its view into this storage."""
        return all(p.data is view for p, view in zip(params, self.views))

    def momentum_view(self, i):
        return self.momentum[self.offsets[i] : self.offsets[i + 1]].reshape(self.views[i].shape)


def _sgd_update(p, g, buf, lr, mu, wd, nesterov, fresh=False):
    """The update rule of the module docstring on arrays, in place: ``p`` (parameters) and ``buf`` (momentum,
    unused when ``mu`` = 0; its old value is discarded when ``fresh``: PyTorch's buf = g at the first step)."""
    if wd:
        g = g + wd * p  # g = grad + wd * p
    if mu:
        if fresh:
            buf[...] = g  # first step: buf = g
        else:
            buf *= mu  # buf = mu * buf + g
            buf += g
        g = g + mu * buf if nesterov else buf
    p -= lr * g  # p = p - lr * d


class SGD:
    """SGD with momentum, L2 weight decay and optional Nesterov momentum (PyTorch semantics).

    Parameters
    ----------
    params : Parameters, ``(name, Parameter)`` pairs (``model.named_parameters()``) or a list of
        group dicts ``{"params": [...], "lr": ..., "weight_decay": ...}``
    lr, momentum, weight_decay, nesterov : defaults for every group
    no_decay : optional predicate ``(name, param) -> bool``; matching parameters go to a second
        group with ``weight_decay = 0`` (e.g. ``is_bn_or_bias``)

    The parameters (which must share one dtype and backend) live in one flat array (see
    ``_FlatStorage``): a step costs about six array operations per group when every parameter
    of the group has a gradient, and six per parameter otherwise (a parameter without a
    gradient is skipped, as in PyTorch).
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
        self._has_momentum = set()  # ids of the parameters whose momentum buffer holds a value
        self._flat = _FlatStorage(self._all_params(), lambda p: None)

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

    @property
    def state(self) -> dict:
        """``{id(param): momentum buffer}`` for the parameters that have one (views of the flat storage)."""
        params = self._storage_for_step()
        return {id(p): self._flat.momentum_view(i) for i, p in enumerate(params) if id(p) in self._has_momentum}

    def _storage_for_step(self):
        """The parameters, with the flat storage rebuilt if any of them was given a new array."""
        params = self._all_params()
        if not self._flat.holds(params):
            old = self._flat
            moved = {id(p): old.momentum_view(i) for i, p in enumerate(params) if id(p) in self._has_momentum}
            self._flat = _FlatStorage(params, lambda p: moved.get(id(p)))
        return params

    @no_grad()
    def step(self) -> None:
        """One update of every parameter that has a gradient (in place, on the flat storage)."""
        params = self._storage_for_step()
        flat, first = self._flat, 0
        for group in self.param_groups:
            members = range(first, first + len(group["params"]))
            first += len(group["params"])
            hyper = group["lr"], group["momentum"], group["weight_decay"], group["nesterov"]
            grads = [params[i].grad for i in members]
            for i, g in zip(members, grads):
                if g is not None and g.shape != params[i].shape:
                    raise RuntimeError(f"gradient of shape {g.shape} for a parameter of shape {params[i].shape}")
            if all(g is not None for g in grads):  # the whole group at once, on its slice of the storage
                a, b = flat.offsets[members.start], flat.offsets[members.stop]
                xp = get_array_module(flat.data)
                g = xp.concatenate([g.data.ravel() for g in grads], dtype=flat.data.dtype)
                _sgd_update(flat.data[a:b], g, flat.momentum[a:b], *hyper)  # unset buffers are 0: mu*0 + g = g
                if hyper[1]:
                    self._has_momentum.update(id(params[i]) for i in members)
                continue
            for i, g in zip(members, grads):  # some gradients missing: parameter by parameter
                if g is None:
                    continue
                p = params[i]
                fresh = id(p) not in self._has_momentum
                _sgd_update(p.data, g.data.astype(p.dtype, copy=False), flat.momentum_view(i), *hyper, fresh=fresh)
                if hyper[1]:
                    self._has_momentum.add(id(p))

    # ----- saving ---------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Hyper-parameters per group and the momentum buffers (NumPy copies) by flat index."""
        groups = [
            {k: g[k] for k in ("lr", "momentum", "weight_decay", "nesterov")}
            | {"num_params": len(g["params"]), "names": list(g["names"])}
            for g in self.param_groups
        ]
        params = self._storage_for_step()
        buffers = {
            str(i): np.array(to_cpu(self._flat.momentum_view(i)), copy=True)
            for i, p in enumerate(params)
            if id(p) in self._has_momentum
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
        params = self._storage_for_step()
        for key, value in state["momentum_buffers"].items():
            p = params[int(key)]
            if tuple(value.shape) != p.shape:
                raise ValueError(f"momentum buffer {key} has shape {tuple(value.shape)}, parameter {p.shape}")
        flat = self._flat
        flat.momentum[...] = 0
        self._has_momentum = set()
        for key, value in state["momentum_buffers"].items():
            i = int(key)
            view = flat.momentum_view(i)
            view[...] = get_array_module(view).asarray(np.asarray(to_cpu(value)), dtype=view.dtype)
            self._has_momentum.add(id(params[i]))
        for g, saved in zip(self.param_groups, groups):
            for k in ("lr", "momentum", "weight_decay", "nesterov"):
                g[k] = type(self.defaults[k])(saved[k])


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
