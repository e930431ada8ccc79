"""Numerical checks shared by several test files (strategies live in strategies.py)."""

import gmsop_np as gs
import gmsop_np.functional as F


def hessian_vector_products(scalar_fn, x0, v, step=1e-6):
    """H v of f = scalar_fn at x0, two ways: ``(by double backward, by central differences)``.

    The first differentiates <grad f, v> with ``create_graph=True``; the second is
    (grad f(x0 + step v) - grad f(x0 - step v)) / (2 step). ``scalar_fn`` maps a
    Tensor to a one-element Tensor; x0 and v are float64 arrays of one shape.
    """

    def gradient(values, create_graph=False):
        x = gs.Tensor(values, requires_grad=True)
        scalar_fn(x).backward(create_graph=create_graph)
        return x, x.grad

    x, g = gradient(x0, create_graph=True)
    x.zero_grad()
    F.sum(g * gs.Tensor(v)).backward()
    numeric = (gradient(x0 + step * v)[1].data - gradient(x0 - step * v)[1].data) / (2 * step)
    return x.grad.data, numeric


def splitmix64_words(seed, n, start=0):
    """Words ``start .. start+n-1`` of the SplitMix64 stream of ``seed`` as Python ints, written from
    the published algorithm (Steele, Lea & Flood 2014) with plain integers: the oracle of
    ``gmsop_np.random.CounterRNG``, whose stream starts from the state mix(seed)."""
    mask = (1 << 64) - 1

    def mix(z):
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        return z ^ (z >> 31)

    state, words = mix(seed), []
    for i in range(start + n):
        state = (state + 0x9E3779B97F4A7C15) & mask
        if i >= start:
            words.append(mix(state))
    return words
