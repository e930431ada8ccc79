"""The autodiff engine: ``Tensor``, ``Parameter``, ``Function`` and backward.

How it works (derivations/01_autodiff.md walks through it):

* A ``Function`` runs its ``forward`` on raw backend arrays and, when gradients
  are being recorded, remembers its input Tensors and (weakly) its outputs.
  Each output Tensor points back at the Function that made it (``creator``).
* ``generation`` numbers order the graph: a Function's generation is the
  largest generation of its inputs; a Tensor made by a Function is one more.
  Processing Functions from the highest generation down guarantees that every
  consumer of a Tensor has contributed its gradient before the Tensor's own
  creator runs -- the reverse topological order, found without recursion.
* Gradients of one backward pass are summed per Tensor (so a Tensor used
  twice, ``b = a + a``, receives the sum of both contributions) and written to
  ``.grad`` only for leaves and for Tensors that asked ``retain_grad()``.

A Function writes its backward in one of two styles, told apart by its base class:

* ``Function``: ``backward`` receives the upstream gradients as Tensors and builds
  its result from differentiable ops, so with ``create_graph=True`` the gradient
  itself has a graph (second derivatives).
* ``ArrayFunction``: a kernel-style backward on raw arrays (im2col, the
  Newton--Schulz recursion, batch norm's closed form): faster, but asking for a
  second derivative through it raises a clear ``RuntimeError``.
"""

from __future__ import annotations

import heapq
import itertools
import weakref

import numpy as np

from .backend import backend_of, default_xp, get_array_module, is_array, to_cpu
from .config import Config, using_config

__all__ = ["Tensor", "TensorLike", "Parameter", "Function", "ArrayFunction", "as_tensor", "backward", "tensor"]

DEFAULT_DTYPE = np.float32


def _as_backend_array(data, dtype=None):
    """Turn user data into a backend array (Python data -> float32 by default)."""
    if is_array(data):
        array = data if dtype is None else data.astype(dtype, copy=False)
    elif isinstance(data, np.generic):
        array = np.asarray(data, dtype=dtype)
    elif data is None or isinstance(data, (str, bytes, dict, set)):
        raise TypeError(f"Tensor data must be an array, a number or a (nested) list of numbers, got {data!r}")
    else:
        try:
            array = default_xp().asarray(data, dtype=DEFAULT_DTYPE if dtype is None else dtype)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"Tensor data must be numeric: cannot convert this {type(data).__name__} ({exc}); "
                "a list of Tensors is stacked with F.stack"
            ) from None
    if array.dtype.kind not in "biuf":
        raise TypeError(
            f"Tensor data must be numeric (bool, integer or floating point), got dtype {array.dtype}; "
            "a list of Tensors is stacked with F.stack"
        )
    return array


class Tensor:
    """A backend array plus what autodiff needs.

    Attributes
    ----------
    data : numpy.ndarray or cupy.ndarray
    grad : Tensor or None -- filled by ``backward`` for leaves (and retained tensors)
    requires_grad : bool -- whether gradients flow to this tensor (floating point only)
    creator : Function or None -- the Function that produced it (None for leaves)

    >>> x = Tensor([1.0, 2.0], requires_grad=True)
    >>> y = (x * x).sum()
    >>> y.backward()          # dy/dx = 2x
    >>> x.grad
    Tensor([2. 4.], dtype=float32)
    """

    _is_gmsop_tensor = True
    __array_priority__ = 200  # make ``ndarray + Tensor`` call Tensor.__radd__

    def __init__(self, data, requires_grad: bool = False, name: str | None = None, dtype=None):
        if isinstance(data, Tensor):
            raise TypeError("Tensor(data) expects array data, not a Tensor; use t.detach() to copy a tensor's value")
        self.data = _as_backend_array(data, dtype)
        if requires_grad and self.data.dtype.kind != "f":
            raise TypeError(
                f"only floating-point tensors can require gradients, got dtype {self.data.dtype}; "
                "convert first, e.g. Tensor(x.astype(numpy.float32), requires_grad=True)"
            )
        self.requires_grad = bool(requires_grad)
        self.grad: Tensor | None = None
        self.creator: Function | None = None
        self.generation = 0
        self.name = name
        self._retains_grad = False

    # ----- array-like properties -------------------------------------------------
    @property
    def shape(self) -> tuple:
        return self.data.shape

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        return self.data.size

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def backend(self) -> str:
        """'numpy' or 'cupy'."""
        return backend_of(self.data)

    @property
    def is_leaf(self) -> bool:
        return self.creator is None

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        body = str(to_cpu(self.data)).replace("\n", "\n       ")
        extra = f", backend={self.backend}" if self.backend != "numpy" else ""
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({body}, dtype={self.dtype}{extra}{grad})"

    # ----- operators: each is a differentiable function of gmsop_np.functions.basic ---------
    def __add__(self, other):
        return _ops.add(self, as_tensor(other, self))

    def __radd__(self, other):
        return _ops.add(as_tensor(other, self), self)

    def __sub__(self, other):
        return _ops.sub(self, as_tensor(other, self))

    def __rsub__(self, other):
        return _ops.sub(as_tensor(other, self), self)

    def __mul__(self, other):
        return _ops.mul(self, as_tensor(other, self))

    def __rmul__(self, other):
        return _ops.mul(as_tensor(other, self), self)

    def __truediv__(self, other):
        return _ops.div(self, as_tensor(other, self))

    def __rtruediv__(self, other):
        return _ops.div(as_tensor(other, self), self)

    def __neg__(self):
        return _ops.neg(self)

    def __pow__(self, exponent):
        return _ops.pow(self, exponent)

    def __matmul__(self, other):
        return _ops.matmul(self, as_tensor(other, self))

    def __rmatmul__(self, other):
        return _ops.matmul(as_tensor(other, self), self)

    def __getitem__(self, index):
        return _ops.getitem(self, index)

    # comparisons give plain (non-differentiable) boolean Tensors, handy for masks
    def __gt__(self, other):
        return Tensor(self.data > getattr(other, "data", other))

    def __ge__(self, other):
        return Tensor(self.data >= getattr(other, "data", other))

    def __lt__(self, other):
        return Tensor(self.data < getattr(other, "data", other))

    def __le__(self, other):
        return Tensor(self.data <= getattr(other, "data", other))

    __hash__ = object.__hash__  # identity: Tensors are dictionary keys in backward

    # ----- methods: the same functions, spelled as NumPy spells them ---------------------------
    def sum(self, axis=None, keepdims=False):
        return _ops.sum(self, axis, keepdims)

    def mean(self, axis=None, keepdims=False):
        return _ops.mean(self, axis, keepdims)

    def max(self, axis=None, keepdims=False):
        return _ops.max(self, axis, keepdims)

    def exp(self):
        return _ops.exp(self)

    def log(self):
        return _ops.log(self)

    def sqrt(self):
        return _ops.sqrt(self)

    def abs(self):
        return _ops.abs(self)

    def clip(self, lo=None, hi=None):
        return _ops.clip(self, lo, hi)

    def reshape(self, *shape):
        return _ops.reshape(self, *shape)

    def transpose(self, *axes):
        return _ops.transpose(self, axes[0] if len(axes) == 1 else (axes or None))

    def swapaxes(self, axis1, axis2):
        return _ops.swapaxes(self, axis1, axis2)

    @property
    def T(self):
        return _ops.transpose(self)

    @property
    def mT(self):
        """The transpose of the last two axes (of every matrix in a batch)."""
        return _ops.swapaxes(self, -1, -2)

    # ----- conversions ----------------------------------------------------------
    def numpy(self) -> np.ndarray:
        """A NumPy copy of the data (copied from the GPU when needed)."""
        return np.array(to_cpu(self.data), copy=True)

    def item(self):
        """The value of a one-element tensor as a Python number (a device->host read on a GPU)."""
        if self.size != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return self.data.reshape(()).item()

    def detach(self) -> Tensor:
        """A new leaf Tensor sharing this data, cut from the graph."""
        return Tensor(self.data)

    def astype(self, dtype) -> Tensor:
        """A copy in another dtype, cut from the graph (use for data, not inside a model)."""
        array = self.data.astype(dtype)
        return Tensor(array, requires_grad=self.requires_grad and array.dtype.kind == "f")

    def to_gpu(self) -> Tensor:
        """A copy on the GPU (a new leaf). Modules move parameters in place instead."""
        from .backend import to_gpu  # noqa: PLC0415

        return Tensor(to_gpu(self.data), requires_grad=self.requires_grad, name=self.name)

    def to_cpu(self) -> Tensor:
        """A copy in host memory (a new leaf)."""
        return Tensor(to_cpu(self.data), requires_grad=self.requires_grad, name=self.name)

    # ----- autodiff -------------------------------------------------------------
    def retain_grad(self) -> Tensor:
        """Keep ``.grad`` for this non-leaf tensor after backward."""
        self._retains_grad = True
        return self

    def zero_grad(self) -> None:
        """Forget the accumulated gradient (``.grad = None``)."""
        self.grad = None

    def backward(self, grad=None, create_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) . grad into every leaf's ``.grad``.

        ``grad`` defaults to 1 for a one-element tensor; pass an array or Tensor
        of the same shape otherwise. With ``create_graph=True`` the gradients
        are themselves differentiable (for second derivatives).
        """
        backward([self], None if grad is None else [grad], create_graph=create_graph)


#: What a function accepts where a tensor goes: a Tensor, a NumPy or CuPy array, or a Python number or
#: (nested) list -- anything ``as_tensor`` turns into a Tensor.
TensorLike = Tensor | np.ndarray | float | int | list


class Parameter(Tensor):
    """A trainable Tensor: ``requires_grad`` is True and Modules register it."""

    def __init__(self, data, name: str | None = None, dtype=None):
        super().__init__(data, requires_grad=True, name=name, dtype=dtype)

    def __repr__(self) -> str:
        return "Parameter" + super().__repr__()[len("Tensor") :]


def as_tensor(x: TensorLike, like: Tensor | None = None) -> Tensor:
    """``x`` as a Tensor. A Python scalar takes the floating dtype and backend of ``like``."""
    if isinstance(x, Tensor):
        return x
    if like is not None and isinstance(x, (int, float, bool, np.generic)):
        xp = get_array_module(like)
        dtype = like.dtype if like.dtype.kind == "f" else None
        return Tensor(xp.full((), x, dtype=dtype))  # filled on the device: no host -> device copy
    return Tensor(x)


def tensor(data: TensorLike, requires_grad: bool = False, dtype: object = None) -> Tensor:
    """Convenience constructor, like ``torch.tensor``."""
    return Tensor(data, requires_grad=requires_grad, dtype=dtype)


class Function:
    """One differentiable operation whose backward is itself differentiable.

    Subclasses implement ``forward(*xs)`` on raw arrays (returning an array or a
    tuple of arrays) and ``backward(*gys)``, which receives one upstream gradient
    per output **as a Tensor** and returns one gradient per input (a Tensor, or
    ``None`` for inputs that need none), built from differentiable ops. Values
    needed by backward are saved as named attributes in forward;
    ``self.needs_input_grad`` tells backward which inputs need a gradient.
    """

    differentiable_backward = True

    def __call__(self, *inputs):
        like = next((x for x in inputs if isinstance(x, Tensor)), None)
        inputs = tuple(as_tensor(x, like) for x in inputs)
        get_array_module(*inputs)  # raises a TypeError when NumPy and CuPy are mixed
        outputs = self._forward_naming_errors(tuple(x.data for x in inputs))
        is_tuple = isinstance(outputs, tuple)
        outputs = tuple(Tensor(y) for y in (outputs if is_tuple else (outputs,)))

        if Config.enable_backprop and any(x.requires_grad for x in inputs):
            self.inputs = inputs
            self.needs_input_grad = tuple(x.requires_grad for x in inputs)
            self.generation = max(x.generation for x in inputs)
            self.output_refs = tuple(weakref.ref(y) for y in outputs)
            self.output_meta = tuple((y.shape, y.dtype) for y in outputs)
            for y in outputs:
                y.creator, y.requires_grad, y.generation = self, True, self.generation + 1
        return outputs if is_tuple else outputs[0]

    def _forward_naming_errors(self, arrays):
        """``forward``, with NumPy's bare errors (broadcasting, indexing) prefixed by the op and shapes."""
        try:
            return self.forward(*arrays)
        except (ValueError, TypeError, IndexError) as exc:
            if type(exc) not in (ValueError, TypeError, IndexError):
                raise  # a specialised error type (ours or NumPy's) already says enough
            shapes = ", ".join(str(tuple(a.shape)) for a in arrays)
            raise type(exc)(f"{self.name} (inputs of shape {shapes}): {exc}") from exc

    def forward(self, *xs):
        raise NotImplementedError

    def backward(self, *gys):
        raise NotImplementedError

    @property
    def name(self) -> str:
        return type(self).__name__

    def output(self, i: int = 0) -> Tensor:
        """The i-th output Tensor (alive whenever backward needs it)."""
        return self.output_refs[i]()

    # -- used by the engine -------------------------------------------------------
    def _run_backward(self, gys, create_graph: bool):
        if self.differentiable_backward:
            gxs = self.backward(*gys)
        else:
            if create_graph:
                raise RuntimeError(
                    f"{self.name}.backward works on raw arrays and is not differentiable, so "
                    "create_graph=True (second-order gradients) cannot pass through it"
                )
            gxs = self.backward(*(g.data for g in gys))
        return self._check_grads(gxs)

    def _check_grads(self, gxs):
        if not isinstance(gxs, (tuple, list)):
            gxs = (gxs,)
        if len(gxs) != len(self.inputs):
            raise RuntimeError(f"{self.name}.backward returned {len(gxs)} gradient(s) for {len(self.inputs)} input(s)")
        checked = []
        for i, (x, gx) in enumerate(zip(self.inputs, gxs)):
            if gx is None or not x.requires_grad:
                checked.append(None)
                continue
            gx = gx if isinstance(gx, Tensor) else Tensor(gx)
            if gx.shape != x.shape:
                raise RuntimeError(
                    f"{self.name}.backward returned a gradient of shape {gx.shape} for input {i} of shape {x.shape}"
                )
            if gx.dtype != x.dtype and gx.creator is None:
                gx = Tensor(gx.data.astype(x.dtype))
            checked.append(gx)
        return checked


class ArrayFunction(Function):
    """A Function with a kernel-style backward: ``backward(*gys)`` receives **raw arrays**
    and returns raw arrays (or ``None``). Faster for closed-form VJPs (im2col,
    Newton--Schulz, batch norm), but not differentiable: ``create_graph=True``
    through it raises a ``RuntimeError`` naming the Function.
    """

    differentiable_backward = False


def _seed_gradient(out: Tensor, grad) -> Tensor:
    if grad is None:
        if out.size != 1:
            raise RuntimeError(
                f"backward() without a gradient needs a one-element output, got shape {out.shape}; "
                "pass grad= (an array of the output's shape)"
            )
        return Tensor(get_array_module(out).ones(out.shape, dtype=out.dtype))
    grad = grad if isinstance(grad, Tensor) else Tensor(grad, dtype=out.dtype)
    get_array_module(out, grad)
    if grad.shape != out.shape:
        raise ValueError(f"gradient of shape {grad.shape} given for an output of shape {out.shape}")
    return grad


def backward(outputs, grads=None, create_graph: bool = False) -> None:
    """Backpropagate from several outputs at once: sum_i <grads[i], d outputs[i]>.

    Leaves (and tensors marked with ``retain_grad``) accumulate into ``.grad``.
    The graph is kept, so backward can run again (after ``zero_grad``).
    """
    outputs = list(outputs)
    grads = [None] * len(outputs) if grads is None else list(grads)
    if len(grads) != len(outputs):
        raise ValueError(f"{len(outputs)} outputs but {len(grads)} gradients")

    pending: dict[Tensor, Tensor] = {}  # gradient received so far by each Tensor of this pass
    queue, queued, arrival = [], set(), itertools.count()  # Functions by generation, highest first

    def receive(t: Tensor, g: Tensor) -> None:
        pending[t] = pending[t] + g if t in pending else g  # a reused Tensor sums its gradients
        f = t.creator
        if f is not None and f not in queued:
            queued.add(f)
            heapq.heappush(queue, (-f.generation, next(arrival), f))  # arrival: a deterministic tie-break

    seeds = []
    for out, g in zip(outputs, grads):
        if not out.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad: nothing to differentiate")
        seeds.append(_seed_gradient(out, g))
        receive(out, seeds[-1])

    with using_config("enable_backprop", create_graph):
        while queue:
            f = heapq.heappop(queue)[2]
            gys = [_take_gradient(pending, ref(), meta, f) for ref, meta in zip(f.output_refs, f.output_meta)]
            for x, gx in zip(f.inputs, f._run_backward(gys, create_graph)):
                if gx is not None:
                    receive(x, gx)

    # What is left belongs to leaves. A leaf gets its own copy only when its gradient array
    # is one already handed out -- ``a + b`` gives both leaves the same object -- or is a
    # seed (possibly the caller's array), so that an in-place update of one .grad never
    # changes another or the caller's data. Copying every leaf's gradient instead would
    # cost one array operation per parameter and step.
    handed_out = {id(seed.data) for seed in seeds}
    for t, g in pending.items():
        if g.creator is None:
            if id(g.data) in handed_out:
                g = Tensor(g.data.copy())
            handed_out.add(id(g.data))
        t.grad = g if t.grad is None else t.grad + g


def _take_gradient(pending, y, meta, f) -> Tensor:
    """The gradient of output ``y`` of ``f`` (zeros if it received none); kept in ``.grad`` if retained."""
    g = pending.pop(y, None) if y is not None else None
    if g is None:
        shape, dtype = meta
        return Tensor(get_array_module(f.inputs[0]).zeros(shape, dtype=dtype))
    if y._retains_grad:
        y.grad = g if y.grad is None else y.grad + g
    return g


# The operators above call the differentiable functions of functions/basic.py, which
# itself builds on Tensor and Function: imported last, once both classes exist.
from .functions import basic as _ops  # noqa: E402
