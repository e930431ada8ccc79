"""``Module``: the container that every layer, head and network is built from.

A Module owns three kinds of state, found automatically when set as attributes:

* **Parameters** (``self.W = Parameter(...)``): trainable tensors; the optimizer
  updates them and ``state_dict`` saves them.
* **sub-Modules** (``self.conv1 = Conv2d(...)``): searched recursively, so a
  network's ``parameters()`` contains the parameters of all its layers.
* **buffers** (``self.register_buffer("running_mean", array)``): raw arrays that
  are state but are not trained (batch-norm running statistics). They are saved
  in ``state_dict`` and moved by ``to_gpu`` / ``to_cpu`` like parameters.

Each kind lives in one dictionary (``_parameters``, ``_modules``, ``_buffers``);
``__getattr__`` looks names up there, so there is exactly one place where a
parameter is stored and replacing it (``to_gpu``) cannot leave a stale copy.

Train / eval: ``module.train()`` / ``module.eval()`` set ``.training`` on the
whole tree; a layer behaves as in training (batch statistics, dropout, gating
noise) when its ``.training`` flag is set. It is the only switch for this.
"""

from __future__ import annotations

from collections import OrderedDict, namedtuple

import numpy as np

from ..backend import get_array_module, is_array, to_cpu, to_gpu
from ..core import Parameter, Tensor
from ..random import CounterRNG

__all__ = ["Module", "Sequential", "ModuleList", "LoadResult"]

#: What ``load_state_dict(strict=False)`` returns: the keys it could not match.
LoadResult = namedtuple("LoadResult", ["missing_keys", "unexpected_keys"])


class Module:
    """Base class of all layers and networks.

    Subclasses call ``super().__init__()`` first, assign Parameters, sub-Modules
    and buffers as attributes, and implement ``forward``. ``module(x)`` runs
    ``module.forward(x)``.
    """

    def __init__(self):
        # object.__setattr__ bypasses our own __setattr__ (which needs these dicts).
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "training", True)

    # ----- registration ---------------------------------------------------------------
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(
                f"cannot assign {name!r} before Module.__init__() ran; call super().__init__() "
                f"first in {type(self).__name__}.__init__"
            )
        # A name belongs to exactly one registry: forget it everywhere first.
        for registry in (self._parameters, self._modules):
            registry.pop(name, None)
        if isinstance(value, Parameter):
            self.__dict__.pop(name, None)
            self._buffers.pop(name, None)
            self._parameters[name] = value
        elif isinstance(value, Module):
            self.__dict__.pop(name, None)
            self._buffers.pop(name, None)
            self._modules[name] = value
        elif name in self._buffers:
            if value is not None and not is_array(value):
                raise TypeError(
                    f"buffer {name!r} of {type(self).__name__} must be a NumPy/CuPy array, got {type(value).__name__}"
                )
            self._buffers[name] = value
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name):
        # Called only when normal lookup fails: look in the registries.
        for registry in ("_parameters", "_modules", "_buffers"):
            table = self.__dict__.get(registry)
            if table is not None and name in table:
                return table[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name):
        for registry in (self._parameters, self._modules, self._buffers):
            if name in registry:
                del registry[name]
                return
        object.__delattr__(self, name)

    def register_buffer(self, name: str, array) -> None:
        """Register a non-trainable array (e.g. BN running mean) as saved state."""
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"buffer name must be a valid identifier, got {name!r}")
        if name in self._parameters or name in self._modules:
            raise KeyError(f"{name!r} is already a parameter or sub-module of {type(self).__name__}")
        if array is not None and not is_array(array):
            raise TypeError(f"register_buffer({name!r}, ...) needs a NumPy/CuPy array, got {type(array).__name__}")
        self.__dict__.pop(name, None)
        self._buffers[name] = array

    # ----- traversal ------------------------------------------------------------------
    def named_modules(self, prefix: str = ""):
        """Yield ``(dotted_name, module)`` for this module and all descendants (each once)."""
        seen = set()

        def walk(module, path):
            if id(module) in seen:
                return
            seen.add(id(module))
            yield path, module
            for name, child in module._modules.items():
                yield from walk(child, f"{path}.{name}" if path else name)

        yield from walk(self, prefix)

    def modules(self):
        """This module and all descendants."""
        return [m for _, m in self.named_modules()]

    def children(self):
        """The direct sub-modules."""
        return list(self._modules.values())

    def named_parameters(self, prefix: str = ""):
        """Yield ``(dotted_name, Parameter)``; a parameter shared by two layers appears once."""
        seen = set()
        for path, module in self.named_modules(prefix):
            for name, p in module._parameters.items():
                if id(p) not in seen:
                    seen.add(id(p))
                    yield (f"{path}.{name}" if path else name), p

    def parameters(self) -> list:
        """All trainable Parameters of the tree, in registration order."""
        return [p for _, p in self.named_parameters()]

    def named_buffers(self, prefix: str = ""):
        """Yield ``(dotted_name, array)`` for every (non-None) buffer."""
        for path, module in self.named_modules(prefix):
            for name, b in module._buffers.items():
                if b is not None:
                    yield (f"{path}.{name}" if path else name), b

    def buffers(self) -> list:
        return [b for _, b in self.named_buffers()]

    def num_parameters(self) -> int:
        """Number of trainable scalars (what the paper's tables count)."""
        return int(sum(p.size for p in self.parameters()))

    # ----- modes ----------------------------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        """Set training mode on this module and all descendants (returns self)."""
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self) -> Module:
        """Evaluation mode: running BN statistics, no dropout, no gating noise."""
        return self.train(False)

    # ----- gradients and devices ------------------------------------------------------
    def zero_grad(self) -> None:
        """Forget the gradients of all parameters (``p.grad = None``)."""
        for p in self.parameters():
            p.grad = None

    def _apply(self, fn) -> Module:
        """Replace every parameter's (and gradient's) and every buffer's array by ``fn(array)``, in place."""
        for m in self.modules():
            for p in m._parameters.values():
                p.data = fn(p.data)  # the same Parameter object, a new array
                if p.grad is not None:
                    p.grad = Tensor(fn(p.grad.data))
            for name, b in m._buffers.items():
                if b is not None:
                    m._buffers[name] = fn(b)
        return self

    def to_gpu(self) -> Module:
        """Move every parameter and buffer to the GPU, in place (returns self)."""
        return self._apply(to_gpu)

    def to_cpu(self) -> Module:
        """Move every parameter and buffer to host memory, in place (returns self)."""
        return self._apply(to_cpu)

    def astype(self, dtype) -> Module:
        """Convert every floating-point parameter and buffer to ``dtype``, in place (returns self).

        Integer buffers (counters) keep their dtype.
        """
        dtype = np.dtype(dtype)
        if dtype.kind != "f":
            raise TypeError(f"astype needs a floating-point dtype (float32 or float64), got {dtype}")
        return self._apply(lambda a: a.astype(dtype, copy=False) if a.dtype.kind == "f" else a)

    def named_generators(self):
        """Yield ``(path, generator)`` for every random generator a module holds (dropout masks,
        gating noise): a ``gmsop_np.random.CounterRNG`` or a ``numpy.random.Generator``. Their states,
        ``generator.bit_generator.state`` (get and set; for a CounterRNG ``{"seed", "counter"}``),
        are what a checkpoint must save to resume a run exactly."""
        for path, module in self.named_modules():
            for name, value in vars(module).items():
                if isinstance(value, (CounterRNG, np.random.Generator)):
                    yield f"{path}:{name}" if path else f":{name}", value

    # ----- saving and loading ---------------------------------------------------------
    def state_dict(self) -> OrderedDict[str, np.ndarray]:
        """Parameters and buffers as NumPy *copies* in host memory, keyed by dotted name.

        The copies never alias the live arrays, so training on does not change a
        saved state dict, and a state dict from the GPU is ordinary NumPy data.
        """
        state = OrderedDict()
        for name, p in self.named_parameters():
            state[name] = np.array(to_cpu(p.data), copy=True)
        for name, b in self.named_buffers():
            state[name] = np.array(to_cpu(b), copy=True)
        return state

    def load_state_dict(self, state_dict, strict: bool = True) -> LoadResult:
        """Copy values from ``state_dict`` into the parameters and buffers, in place.

        Each value is written into the existing array, so dtype and backend (CPU/GPU)
        of the module are kept. ``strict=True`` (default) raises a ``KeyError`` when a
        key is missing or unexpected; a shape mismatch is always a ``ValueError``.
        Returns ``LoadResult(missing_keys, unexpected_keys)``.
        """
        targets = OrderedDict()  # name -> (container, key) where the array lives
        for path, module in self.named_modules():
            for name, p in module._parameters.items():
                targets.setdefault(f"{path}.{name}" if path else name, ("param", p))
            for name, b in module._buffers.items():
                if b is not None:
                    targets[f"{path}.{name}" if path else name] = ("buffer", (module, name))

        missing = [k for k in targets if k not in state_dict]
        unexpected = [k for k in state_dict if k not in targets]
        if strict and (missing or unexpected):
            raise KeyError(
                f"load_state_dict into {type(self).__name__}: missing keys {missing}, unexpected keys "
                f"{unexpected}. The state dict was made for a different architecture (or head); "
                "pass strict=False to load only the matching keys."
            )
        mismatched = []
        for key, (kind, where) in targets.items():
            if key in state_dict:
                current = where.data if kind == "param" else where[0]._buffers[where[1]]
                value = np.asarray(to_cpu(state_dict[key]))
                if value.shape != current.shape:
                    mismatched.append(f"{key}: checkpoint {value.shape} vs model {current.shape}")
        if mismatched:
            raise ValueError(
                f"load_state_dict into {type(self).__name__}: shape mismatch for "
                + "; ".join(mismatched)
                + ". Build the model with the same arguments (num_classes, head, preset, ...) as when saving."
            )
        for key, (kind, where) in targets.items():
            if key not in state_dict:
                continue
            current = where.data if kind == "param" else where[0]._buffers[where[1]]
            xp = get_array_module(current)
            current[...] = xp.asarray(np.asarray(to_cpu(state_dict[key])), dtype=current.dtype)
        return LoadResult(missing, unexpected)

    # ----- calling and printing ---------------------------------------------------------
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must implement forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def extra_repr(self) -> str:
        """One line of hyper-parameters shown by ``repr`` (override in layers)."""
        return ""

    def __repr__(self):
        lines = [f"({name}): " + repr(child).replace("\n", "\n  ") for name, child in self._modules.items()]
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not lines:
            return head + ")"
        return head + "\n  " + "\n  ".join(lines) + "\n)"


class ModuleList(Module):
    """A list of sub-modules that are registered (so their parameters are found).

    A plain Python list of layers would hide their parameters from ``parameters()``.
    """

    def __init__(self, modules=()):
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, module: Module) -> ModuleList:
        if not isinstance(module, Module):
            raise TypeError(
                f"{type(self).__name__} item {len(self)} is a {type(module).__name__}, not a Module "
                "(wrap plain functions in a Module subclass)"
            )
        setattr(self, str(len(self._modules)), module)
        return self

    def __getitem__(self, i):
        return list(self._modules.values())[i]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def forward(self, *args, **kwargs):
        raise TypeError("ModuleList is a container, not a layer: iterate over it and call its items")


class Sequential(ModuleList):
    """Apply sub-modules one after the other: ``Sequential(a, b, c)(x) == c(b(a(x)))``.

    The layers are registered under the names "0", "1", ... (so state-dict keys
    look like ``stem.0.W``). Indexing, ``len`` and iteration come from ModuleList.
    """

    def __init__(self, *layers: Module):
        super().__init__(layers)

    def forward(self, x):
        for layer in self:
            x = layer(x)
        return x
