"""Core differentiable ops: arithmetic, elementwise maths, matmul, reductions,
shape ops, indexing, joining, where and clip.

Every backward here is written with these same differentiable ops, so
``create_graph=True`` gives second derivatives through all of them.

Broadcasting follows NumPy. When an input was broadcast in forward, its
gradient is summed back to the input's shape (``sum_to``): the adjoint of
"copy along an axis" is "sum along that axis" (derivations/01_autodiff.md, eq. (5)).
"""

from __future__ import annotations

from .._checks import check_int
from ..backend import get_array_module
from ..core import Function, Tensor, TensorLike, as_tensor

__all__ = [
    "add",
    "sub",
    "mul",
    "div",
    "neg",
    "pow",
    "exp",
    "log",
    "sqrt",
    "abs",
    "matmul",
    "sum",
    "mean",
    "max",
    "reshape",
    "transpose",
    "swapaxes",
    "broadcast_to",
    "sum_to",
    "getitem",
    "concatenate",
    "stack",
    "where",
    "clip",
]


def _sum_to_shape(xp, x, shape):
    """Sum the array ``x`` down to ``shape`` (undo NumPy broadcasting)."""
    lead = x.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(i + lead for i, n in enumerate(shape) if n == 1 and x.shape[i + lead] != 1)
    y = x.sum(axis=axes, keepdims=True) if axes else x
    return y.reshape(shape) if lead or y.shape != shape else y


# ----- broadcasting -------------------------------------------------------------
class BroadcastTo(Function):
    """y = x broadcast to ``shape``; VJP: gx = sum_to(gy, x.shape).

    See derivations/01_autodiff.md, eq. (5).
    """

    def __init__(self, shape):
        self.shape = tuple(shape)

    def forward(self, x):
        xp = get_array_module(x)
        self.x_shape = x.shape
        return xp.broadcast_to(x, self.shape).copy()

    def backward(self, gy):
        return sum_to(gy, self.x_shape)


class SumTo(Function):
    """y = x summed down to ``shape``; VJP: gx = broadcast_to(gy, x.shape).

    See derivations/01_autodiff.md, eq. (6).
    """

    def __init__(self, shape):
        self.shape = tuple(shape)

    def forward(self, x):
        xp = get_array_module(x)
        self.x_shape = x.shape
        return _sum_to_shape(xp, x, self.shape)

    def backward(self, gy):
        return broadcast_to(gy, self.x_shape)


def broadcast_to(x: TensorLike, shape: tuple) -> Tensor:
    x = as_tensor(x)
    return x if x.shape == tuple(shape) else BroadcastTo(shape)(x)


def sum_to(x: TensorLike, shape: tuple) -> Tensor:
    x = as_tensor(x)
    return x if x.shape == tuple(shape) else SumTo(shape)(x)


# ----- arithmetic ---------------------------------------------------------------
class Add(Function):
    """y = a + b; VJP: ga = sum_to(gy), gb = sum_to(gy).

    See derivations/01_autodiff.md, eq. (7).
    """

    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        return a + b

    def backward(self, gy):
        return sum_to(gy, self.shapes[0]), sum_to(gy, self.shapes[1])


class Sub(Function):
    """y = a - b; VJP: ga = gy, gb = -gy (each summed to its shape).

    See derivations/01_autodiff.md, eq. (8).
    """

    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        return a - b

    def backward(self, gy):
        return sum_to(gy, self.shapes[0]), sum_to(-gy, self.shapes[1])


class Mul(Function):
    """y = a * b; VJP: ga = gy * b, gb = gy * a.

    See derivations/01_autodiff.md, eq. (9).
    """

    def forward(self, a, b):
        return a * b

    def backward(self, gy):
        a, b = self.inputs
        ga = sum_to(gy * b, a.shape) if self.needs_input_grad[0] else None
        gb = sum_to(gy * a, b.shape) if self.needs_input_grad[1] else None
        return ga, gb


class Div(Function):
    """y = a / b; VJP: ga = gy / b, gb = -gy a / b^2.

    See derivations/01_autodiff.md, eq. (10).
    """

    def forward(self, a, b):
        return a / b

    def backward(self, gy):
        a, b = self.inputs
        ga = sum_to(gy / b, a.shape) if self.needs_input_grad[0] else None
        gb = sum_to(-gy * a / (b * b), b.shape) if self.needs_input_grad[1] else None
        return ga, gb


class Neg(Function):
    """y = -x; VJP: gx = -gy.

    See derivations/01_autodiff.md, eq. (11).
    """

    def forward(self, x):
        return -x

    def backward(self, gy):
        return -gy


class Pow(Function):
    """y = x^c for a constant exponent c; VJP: gx = gy c x^(c-1).

    See derivations/01_autodiff.md, eq. (12).
    """

    def __init__(self, c):
        self.c = c

    def forward(self, x):
        return x**self.c

    def backward(self, gy):
        x = self.inputs[0]
        return gy * self.c * x ** (self.c - 1)


def add(a: TensorLike, b: TensorLike) -> Tensor:
    return Add()(a, b)


def sub(a: TensorLike, b: TensorLike) -> Tensor:
    return Sub()(a, b)


def mul(a: TensorLike, b: TensorLike) -> Tensor:
    return Mul()(a, b)


def div(a: TensorLike, b: TensorLike) -> Tensor:
    return Div()(a, b)


def neg(x: TensorLike) -> Tensor:
    return Neg()(x)


def pow(x: TensorLike, c: float) -> Tensor:  # noqa: A001  (mirrors numpy.power's role)
    if isinstance(c, Tensor):
        raise TypeError("pow(x, c) supports a constant (Python number) exponent only")
    return Pow(c)(x)


# ----- elementwise maths ----------------------------------------------------------
class Exp(Function):
    """y = e^x; VJP: gx = gy y.

    See derivations/01_autodiff.md, eq. (13).
    """

    def forward(self, x):
        return get_array_module(x).exp(x)

    def backward(self, gy):
        return gy * self.output()


class Log(Function):
    """y = log x; VJP: gx = gy / x.

    See derivations/01_autodiff.md, eq. (14).
    """

    def forward(self, x):
        return get_array_module(x).log(x)

    def backward(self, gy):
        return gy / self.inputs[0]


class Sqrt(Function):
    """y = sqrt(x); VJP: gx = gy / (2 y).

    See derivations/01_autodiff.md, eq. (15).
    """

    def forward(self, x):
        return get_array_module(x).sqrt(x)

    def backward(self, gy):
        return gy / (2 * self.output())


class Abs(Function):
    """y = |x|; VJP: gx = gy sign(x) (0 at x = 0, a valid subgradient).

    See derivations/01_autodiff.md, eq. (16).
    """

    def forward(self, x):
        return get_array_module(x).abs(x)

    def backward(self, gy):
        x = self.inputs[0]
        return gy * Tensor(get_array_module(x).sign(x.data))


def exp(x: TensorLike) -> Tensor:
    return Exp()(x)


def log(x: TensorLike) -> Tensor:
    return Log()(x)


def sqrt(x: TensorLike) -> Tensor:
    return Sqrt()(x)


def abs(x: TensorLike) -> Tensor:  # noqa: A001
    return Abs()(x)


# ----- matrix product -------------------------------------------------------------
class MatMul(Function):
    """Batched y = a @ b (batch dims broadcast); VJP: ga = gy b^T, gb = a^T gy.

    See derivations/01_autodiff.md, eq. (17).
    """

    def forward(self, a, b):
        return get_array_module(a).matmul(a, b)

    def backward(self, gy):
        a, b = self.inputs
        ga = sum_to(matmul(gy, swapaxes(b, -1, -2)), a.shape) if self.needs_input_grad[0] else None
        gb = sum_to(matmul(swapaxes(a, -1, -2), gy), b.shape) if self.needs_input_grad[1] else None
        return ga, gb


def matmul(a: TensorLike, b: TensorLike) -> Tensor:
    """Matrix product ``a @ b`` of (..., n, k) and (..., k, m); leading (batch) axes broadcast."""
    a, b = as_tensor(a), as_tensor(b)
    if a.ndim < 2 or b.ndim < 2:
        raise ValueError(
            f"matmul needs arrays with at least 2 dimensions, got shapes {a.shape} and {b.shape}; "
            "reshape vectors to (n, 1) or (1, n)"
        )
    if a.shape[-1] != b.shape[-2]:
        raise ValueError(
            f"matmul: the inner dimensions differ, a has shape {a.shape} ({a.shape[-1]} columns) but b has "
            f"shape {b.shape} ({b.shape[-2]} rows)"
        )
    return MatMul()(a, b)


# ----- reductions ------------------------------------------------------------------
def _normalize_axis(axis, ndim):
    """``axis`` (None, an int or a tuple of ints, negatives counted from the end) as sorted non-negative axes."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    for a in axes:
        check_int(a, "axis", -ndim, ndim - 1)
    return tuple(sorted(a % ndim for a in axes))


def _keepdims_shape(shape, axes):
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


class Sum(Function):
    """y = sum of x over ``axis``; VJP: gx = gy broadcast back over the summed axes.

    See derivations/01_autodiff.md, eq. (18).
    """

    def __init__(self, axis=None, keepdims=False):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        self.x_shape = x.shape
        self.axes = _normalize_axis(self.axis, x.ndim)
        return x.sum(axis=self.axes, keepdims=self.keepdims)

    def backward(self, gy):
        gy = reshape(gy, _keepdims_shape(self.x_shape, self.axes))
        return broadcast_to(gy, self.x_shape)


class Max(Function):
    """y = max of x over ``axis``; VJP: gy shared equally among the maximal entries.

    See derivations/01_autodiff.md, eq. (20).
    """

    def __init__(self, axis=None, keepdims=False):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        self.axes = _normalize_axis(self.axis, x.ndim)
        return x.max(axis=self.axes, keepdims=self.keepdims)

    def backward(self, gy):
        x = self.inputs[0]
        kept = _keepdims_shape(x.shape, self.axes)
        y = self.output().data.reshape(kept)
        is_max = (x.data == y).astype(x.dtype)
        share = Tensor(is_max / is_max.sum(axis=self.axes, keepdims=True))
        return broadcast_to(reshape(gy, kept), x.shape) * share


def sum(x: TensorLike, axis: int | tuple | None = None, keepdims: bool = False) -> Tensor:  # noqa: A001
    return Sum(axis, keepdims)(x)


def mean(x: TensorLike, axis: int | tuple | None = None, keepdims: bool = False) -> Tensor:
    """Mean over ``axis`` = sum / count (its gradient follows from sum's).

    See derivations/01_autodiff.md, eq. (19).
    """
    x = as_tensor(x)
    count = 1
    for a in _normalize_axis(axis, x.ndim):
        count *= x.shape[a]
    return sum(x, axis, keepdims) * (1.0 / count)


def max(x: TensorLike, axis: int | tuple | None = None, keepdims: bool = False) -> Tensor:  # noqa: A001
    return Max(axis, keepdims)(x)


# ----- shape ops -----------------------------------------------------------------------
class Reshape(Function):
    """y = x viewed with a new shape; VJP: gx = gy reshaped back.

    See derivations/01_autodiff.md, eq. (21).
    """

    def __init__(self, shape):
        self.shape = shape

    def forward(self, x):
        self.x_shape = x.shape
        return x.reshape(self.shape)

    def backward(self, gy):
        return reshape(gy, self.x_shape)


class Transpose(Function):
    """y = x with axes permuted; VJP: gx = gy with the inverse permutation.

    See derivations/01_autodiff.md, eq. (22).
    """

    def __init__(self, axes=None):
        self.axes = axes

    def forward(self, x):
        self.axes = tuple(range(x.ndim))[::-1] if self.axes is None else tuple(a % x.ndim for a in self.axes)
        return x.transpose(self.axes)

    def backward(self, gy):
        inverse = [0] * len(self.axes)
        for i, a in enumerate(self.axes):
            inverse[a] = i
        return transpose(gy, inverse)


def reshape(x: TensorLike, *shape) -> Tensor:
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    x = as_tensor(x)
    return x if x.shape == shape else Reshape(shape)(x)


def transpose(x: TensorLike, axes=None) -> Tensor:
    return Transpose(axes)(x)


def swapaxes(x: TensorLike, axis1, axis2) -> Tensor:
    x = as_tensor(x)
    axes = list(range(x.ndim))
    axes[axis1], axes[axis2] = axes[axis2], axes[axis1]
    return transpose(x, axes)


# ----- indexing ------------------------------------------------------------------------
def _unwrap_index(index):
    """Replace Tensors inside an index by their arrays."""
    if isinstance(index, tuple):
        return tuple(i.data if isinstance(i, Tensor) else i for i in index)
    return index.data if isinstance(index, Tensor) else index


def _selects_each_entry_once(index) -> bool:
    """True for indices made of slices, integers, ``None`` and ``...`` only: they never repeat an entry."""
    parts = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, (slice, int, type(None), type(Ellipsis))) and not isinstance(i, bool) for i in parts)


class GetItem(Function):
    """y = x[index] (slices, integers, integer/boolean arrays); VJP: gy put back into zeros.

    See derivations/01_autodiff.md, eq. (23).

    ``unique`` says that no entry of x is selected twice (always true for slices;
    declared by the caller for integer arrays, e.g. the upper triangle of a matrix
    or each sample's K distinct components). Then the adjoint can *assign* instead
    of scatter-add: deterministic and cheaper on every backend.
    """

    def __init__(self, index, unique=False):
        self.index = _unwrap_index(index)
        self.unique = unique or _selects_each_entry_once(self.index)

    def forward(self, x):
        self.x_shape = x.shape
        return x[self.index]

    def backward(self, gy):
        return GetItemGrad(self.index, self.x_shape, self.unique)(gy)


class GetItemGrad(Function):
    """gx = zeros(x_shape) with gy placed at ``index``: the adjoint of GetItem.

    Repeated indices accumulate (``add.at``: x[i] used twice receives both
    gradients); with ``unique`` indices a plain assignment does the same.
    Its own VJP is ``ggy = ggx[index]`` (derivations/01_autodiff.md, eq. (24)).
    """

    def __init__(self, index, x_shape, unique):
        self.index, self.x_shape, self.unique = index, x_shape, unique

    def forward(self, gy):
        xp = get_array_module(gy)
        gx = xp.zeros(self.x_shape, dtype=gy.dtype)
        if self.unique:
            gx[self.index] = gy
        else:
            xp.add.at(gx, self.index, gy)  # repeated indices accumulate
        return gx

    def backward(self, ggx):
        return getitem(ggx, self.index, unique=self.unique)


def getitem(x: TensorLike, index, unique: bool = False) -> Tensor:
    """``x[index]``, differentiable. ``unique=True`` declares that an integer-array index
    never selects the same entry twice (its backward then assigns instead of accumulating)."""
    return GetItem(index, unique)(x)


# ----- joining ---------------------------------------------------------------------------
class Concatenate(Function):
    """y = concatenate(xs, axis); VJP: gy cut back into the pieces.

    See derivations/01_autodiff.md, eq. (25).
    """

    def __init__(self, axis=0):
        self.axis = axis

    def forward(self, *xs):
        xp = get_array_module(*xs)
        self.sizes = [x.shape[self.axis] for x in xs]
        return xp.concatenate(xs, axis=self.axis)

    def backward(self, gy):
        grads, start = [], 0
        for size in self.sizes:
            index = [slice(None)] * gy.ndim
            index[self.axis] = slice(start, start + size)
            grads.append(getitem(gy, tuple(index)))
            start += size
        return tuple(grads)


def concatenate(xs: TensorLike, axis: int | tuple | None = 0) -> Tensor:
    return Concatenate(axis)(*xs)


def stack(xs: TensorLike, axis: int | tuple | None = 0) -> Tensor:
    """Stack along a new axis = add the axis to each input, then concatenate."""
    xs = [as_tensor(x) for x in xs]
    if not xs:
        raise ValueError("stack needs at least one tensor")
    ndim = xs[0].ndim + 1
    axis = check_int(axis, "axis", -ndim, ndim - 1) % ndim
    return concatenate([reshape(x, x.shape[:axis] + (1,) + x.shape[axis:]) for x in xs], axis=axis)


# ----- selection ---------------------------------------------------------------------------
class Where(Function):
    """y = where(cond, a, b) for a constant boolean ``cond``; VJP routes gy by cond.

    See derivations/01_autodiff.md, eq. (26).
    """

    def __init__(self, cond):
        self.cond = cond.data if isinstance(cond, Tensor) else cond

    def forward(self, a, b):
        return get_array_module(a, b).where(self.cond, a, b)

    def backward(self, gy):
        a, b = self.inputs
        zero = Tensor(get_array_module(gy).zeros((), dtype=gy.dtype))
        ga = sum_to(where(self.cond, gy, zero), a.shape) if self.needs_input_grad[0] else None
        gb = sum_to(where(self.cond, zero, gy), b.shape) if self.needs_input_grad[1] else None
        return ga, gb


class Clip(Function):
    """y = min(max(x, lo), hi); VJP: gy where lo <= x <= hi, else 0.

    See derivations/01_autodiff.md, eq. (27).
    """

    def __init__(self, lo, hi):
        self.lo, self.hi = lo, hi

    def forward(self, x):
        return get_array_module(x).clip(x, self.lo, self.hi)

    def backward(self, gy):
        x = self.inputs[0].data
        inside = x == x  # all True; each bound, when given, removes the clipped side
        if self.lo is not None:
            inside = inside & (x >= self.lo)
        if self.hi is not None:
            inside = inside & (x <= self.hi)
        return gy * Tensor(inside.astype(x.dtype))


def where(cond: TensorLike, a: TensorLike, b: TensorLike) -> Tensor:
    like = a if isinstance(a, Tensor) else b
    return Where(cond)(as_tensor(a, like), as_tensor(b, like))


def clip(x: TensorLike, lo: float | None = None, hi: float | None = None) -> Tensor:
    return Clip(lo, hi)(x)
