"""Prototypes of speed changes that belong in files other than the benchmarks, measured here first.

``threaded_products()``: what ``functions/matrix_sqrt.py`` (and the covariance forward in
``functions/covpool.py``) gain by computing their stacked (B, d, d) products with
``gmsop_np.functions.parallel.matmul`` instead of ``xp.matmul``. Inside the context both
modules see a NumPy whose ``matmul`` is the threaded one; everything else is unchanged.
The real change is one line per product in those files (see benchmarks/RESULTS.md).

    with threaded_products():
        ...   # SR-SOP forward/backward now splits every stacked product over the threads
"""

from __future__ import annotations

import contextlib

import numpy as np

from gmsop_np.functions import covpool, matrix_sqrt, parallel


class _NumpyWithThreadedMatmul:
    """NumPy, except that ``matmul`` splits a stack of matrices over gmsop_np's threads."""

    matmul = staticmethod(parallel.matmul)

    def __getattr__(self, name):
        return getattr(np, name)


@contextlib.contextmanager
def threaded_products():
    """Route the stacked products of matrix_sqrt.py and covpool.py through parallel.matmul."""
    proxy = _NumpyWithThreadedMatmul()
    originals = {module: module.get_array_module for module in (matrix_sqrt, covpool)}

    def patched(original):
        def get_array_module(*args):
            xp = original(*args)
            return proxy if xp is np else xp

        return get_array_module

    for module, original in originals.items():
        module.get_array_module = patched(original)
    try:
        yield
    finally:
        for module, original in originals.items():
            module.get_array_module = original


class FlatSGD:
    """Prototype of SGD over ONE flat buffer (what optim.py may do later): momentum 0.9, weight decay.

    Every parameter's ``data`` becomes a view into one flat array, and so does its
    momentum buffer; a step gathers the gradients into one flat gradient (one copy per
    parameter) and then updates everything with a few whole-buffer operations, split
    over gmsop_np's threads on the CPU. Same arithmetic as ``optim.SGD`` (PyTorch's rule:
    g += wd p; buf = mu buf + g; p -= lr buf).
    """

    def __init__(self, params, lr, momentum=0.9, weight_decay=0.0):
        self.params, self.lr, self.momentum, self.weight_decay = list(params), lr, momentum, weight_decay
        sizes = [p.size for p in self.params]
        self.flat = np.concatenate([p.data.ravel() for p in self.params])
        self.grad = np.empty_like(self.flat)
        self.buf = None
        offsets = np.cumsum([0] + sizes)
        self.slices = [slice(int(a), int(b)) for a, b in zip(offsets[:-1], offsets[1:])]
        for p, s in zip(self.params, self.slices):
            p.data = self.flat[s].reshape(p.shape)  # the parameter now lives in the flat buffer

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    def step(self):
        for p, s in zip(self.params, self.slices):  # gather: one copy per parameter
            self.grad[s] = p.grad.data.ravel()
        parts = parallel.pieces(self.flat, item_bytes=4 * self.flat.itemsize)
        first = self.buf is None
        if first:
            self.buf = np.empty_like(self.flat)

        def update(part):
            g, p, buf = self.grad[part], self.flat[part], self.buf[part]
            g += self.weight_decay * p  # g = grad + wd p
            if first:
                buf[...] = g
            else:
                buf *= self.momentum  # buf = mu buf + g
                buf += g
            p -= self.lr * buf

        parallel.run(update, parts, self.flat)
