"""Counter-based random numbers, computed where the data lives and identical on every backend.

A training step draws random numbers three times: the dropout mask, the gating noise and
the Top-K tie-break priorities. Drawing them with NumPy on the host would cost a
host->device copy each on a GPU, and CuPy's own generators give other streams than
NumPy's (a NumPy run and a GPU run of one seed would drop different entries) with states
that do not carry over between the two. ``CounterRNG`` avoids all three: it computes its
numbers with integer array operations of whichever backend it is asked for (``xp``), so
the stream is bit-identical on NumPy, CuPy and the CPU stand-in for CuPy, and its whole
state is two integers, ``{"seed", "counter"}``, that a checkpoint stores and that resume
on either backend.

The generator is SplitMix64 (Steele, Lea & Flood, "Fast splittable pseudorandom number
generators", OOPSLA 2014: the generator of Java's ``SplittableRandom``; it passes
TestU01's BigCrush) read as a *counter-based* generator. With all arithmetic mod 2^64,
the i-th 64-bit word of the stream with seed s is

    x_i = mix(k + (i + 1) γ),   γ = 0x9E3779B97F4A7C15 (odd, ≈ 2^64 / golden ratio),  k = mix(s),

    mix(z):  z ← (z ⊕ (z ≫ 30)) · 0xBF58476D1CE4E5B9
             z ← (z ⊕ (z ≫ 27)) · 0x94D049BB133111EB
             z ← z ⊕ (z ≫ 31)

which is exactly SplitMix64's output sequence started from the state k. Because x_i
depends on (s, i) only, a draw of n numbers evaluates i = counter .. counter + n - 1 in
one vectorised pass (11 array operations whatever n is) and then advances the counter by
n. Drawing the same shapes in the same order therefore gives the same numbers whether
the draws ran in one process or in a run that was stopped, saved and resumed -- on any
backend. (Seeding with k = mix(s) rather than s keeps nearby seeds from giving streams
that are shifts of each other.)

From the words: a uniform float64 in [0, 1) is (x ≫ 11) · 2^-53 (53 random bits), a
float32 one (x ≫ 40) · 2^-24; Bernoulli(q) is (x ≫ 11) < round(q · 2^53) (no float
needed); a standard normal is the Box--Muller transform
sqrt(-2 ln(1 - u1)) · cos(2π u2) of two float64 uniforms (1 - u1 lies in (0, 1], so the
logarithm is finite).

>>> import numpy as np
>>> rng = CounterRNG(seed=7)
>>> first = rng.random((2, 3))
>>> rng.state
{'seed': 7, 'counter': 6}
>>> again = CounterRNG(seed=7)
>>> bool((again.random((2, 3)) == first).all())
True
"""

from __future__ import annotations

import numbers

import numpy as np

from .backend import default_xp

__all__ = ["CounterRNG", "as_counter_rng"]

_MASK64 = (1 << 64) - 1
_GAMMA = 0x9E3779B97F4A7C15
_MUL1 = 0xBF58476D1CE4E5B9
_MUL2 = 0x94D049BB133111EB


def _mix_int(z: int) -> int:
    """SplitMix64's finaliser on a Python int (host, for the seed)."""
    z = ((z ^ (z >> 30)) * _MUL1) & _MASK64
    z = ((z ^ (z >> 27)) * _MUL2) & _MASK64
    return z ^ (z >> 31)


def _mix(z):
    """SplitMix64's finaliser on a uint64 array, in place (the constants are NumPy uint64 scalars,
    which both NumPy and CuPy take as 64-bit kernel arguments; products wrap mod 2^64)."""
    z ^= z >> np.uint64(30)
    z *= np.uint64(_MUL1)
    z ^= z >> np.uint64(27)
    z *= np.uint64(_MUL2)
    z ^= z >> np.uint64(31)
    return z


class CounterRNG:
    """A counter-based generator whose numbers are computed on the backend asked for (module docstring).

    Parameters
    ----------
    seed : int in [0, 2^64), or None for a seed from the operating system's entropy.

    Every draw takes the array module ``xp`` (``numpy``, ``cupy`` or the stand-in; default: the
    current backend) and returns an array of that backend, and advances ``counter`` by the
    number of 64-bit words it used. ``state`` / ``state = ...`` save and restore the stream.
    """

    def __init__(self, seed=None):
        if seed is None:
            seed = int(np.random.SeedSequence().entropy) & _MASK64
        if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral) or not 0 <= seed <= _MASK64:
            raise TypeError(f"CounterRNG seed must be an integer in [0, 2**64), got {seed!r}")
        self.seed, self.counter = int(seed), 0
        self._key = _mix_int(self.seed)

    # ----- state -----------------------------------------------------------------------------------------
    @property
    def state(self) -> dict:
        """``{"seed": s, "counter": c}``: everything needed to continue the stream (JSON-serialisable)."""
        return {"seed": self.seed, "counter": self.counter}

    @state.setter
    def state(self, value) -> None:
        if not isinstance(value, dict) or set(value) != {"seed", "counter"}:
            raise ValueError(f"a CounterRNG state is a dict with keys 'seed' and 'counter', got {value!r}")
        counter = value["counter"]
        if not isinstance(counter, numbers.Integral) or counter < 0:
            raise ValueError(f"CounterRNG counter must be a non-negative integer, got {counter!r}")
        self.__init__(value["seed"])
        self.counter = int(counter)

    @property
    def bit_generator(self) -> CounterRNG:
        """The generator itself: NumPy exposes a Generator's state as ``g.bit_generator.state``,
        so code that saves and restores generator states works for both kinds."""
        return self

    def __repr__(self) -> str:
        return f"CounterRNG(seed={self.seed}, counter={self.counter})"

    # ----- draws -----------------------------------------------------------------------------------------
    def words(self, shape, xp=None):
        """Uniform random 64-bit words (uint64) of ``shape``: x_i for the next indices of the stream."""
        xp = default_xp() if xp is None else xp
        shape = (shape,) if isinstance(shape, numbers.Integral) else tuple(shape)
        n = int(np.prod(shape, dtype=np.int64))
        start = (self._key + (self.counter + 1) * _GAMMA) & _MASK64  # k + (counter + 1) γ, on the host
        self.counter += n
        z = xp.arange(n, dtype=xp.uint64)
        z *= np.uint64(_GAMMA)
        z += np.uint64(start)
        return _mix(z).reshape(shape)

    def random(self, shape, dtype=np.float64, xp=None):
        """Uniform floats in [0, 1) of ``shape`` and ``dtype`` (float32: 24 random bits, float64: 53)."""
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise TypeError(f"random draws float32 or float64, got dtype {dtype}")
        bits = 24 if dtype == np.float32 else 53
        top = self.words(shape, xp) >> np.uint64(64 - bits)
        return top.astype(dtype) * dtype.type(2.0**-bits)

    def bernoulli(self, shape, q, xp=None):
        """Booleans of ``shape``, each True with probability ``q`` (to 2^-53), independently."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"bernoulli probability q must lie in [0, 1], got {q}")
        threshold = np.uint64(round(q * 2.0**53))
        return (self.words(shape, xp) >> np.uint64(11)) < threshold

    def standard_normal(self, shape, dtype=np.float64, xp=None):
        """N(0, 1) samples of ``shape`` by Box--Muller from two float64 uniforms each, cast to ``dtype``."""
        xp = default_xp() if xp is None else xp
        shape = (shape,) if isinstance(shape, numbers.Integral) else tuple(shape)
        u = self.random((2,) + shape, np.float64, xp)
        radius = xp.sqrt(-2.0 * xp.log1p(-u[0]))  # log(1 - u1), 1 - u1 in (0, 1]
        return (radius * xp.cos((2.0 * np.pi) * u[1])).astype(dtype, copy=False)


def as_counter_rng(rng) -> CounterRNG:
    """``rng`` as a CounterRNG: a CounterRNG is used as is, an int seeds a new one, None is unseeded."""
    if isinstance(rng, CounterRNG):
        return rng
    if rng is None or (isinstance(rng, numbers.Integral) and not isinstance(rng, (bool, np.bool_))):
        return CounterRNG(rng)
    raise TypeError(
        f"expected a gmsop_np.random.CounterRNG, an int seed or None, got {type(rng).__name__} "
        "(NumPy's generators draw on the host; this one draws on the data's backend)"
    )
