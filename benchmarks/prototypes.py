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
