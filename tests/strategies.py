"""Hypothesis strategies shared by the test suite.

Values are bounded and shapes small: the point is to hit odd shapes (size 1,
broadcast axes, non-square maps) quickly, not to stress-test. Strategies that
feed a kink (ReLU at 0, Top-K ties, max ties) keep a margin away from it.
"""

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

finite = dict(allow_nan=False, allow_infinity=False)


def shapes(min_dims=1, max_dims=4, min_side=1, max_side=4):
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side)


def arrays(shape, low=-2.0, high=2.0, dtype=np.float64):
    """float64 arrays with bounded values."""
    return hnp.arrays(dtype, shape, elements=st.floats(low, high, **finite))


def positive_arrays(shape, low=0.2, high=3.0):
    """Strictly positive values (log, sqrt, division, powers)."""
    return arrays(shape, low, high)


@st.composite
def broadcastable_pair(draw, max_dims=4, max_side=4):
    """Two shapes that broadcast against each other (NumPy rules)."""
    shape = draw(shapes(1, max_dims, 1, max_side))
    other = list(shape)
    for i in range(len(other)):
        if draw(st.booleans()):
            other[i] = 1
    drop = draw(st.integers(0, len(other) - 1))
    return tuple(shape), tuple(other[drop:])


@st.composite
def distinct_arrays(draw, shape, gap=0.05, low=-2.0, high=2.0):
    """Arrays whose entries differ pairwise by at least ``gap`` (away from max/Top-K ties).

    Built from a shuffled evenly spaced grid plus small jitter, so no two
    values are closer than ``gap``.
    """
    n = int(np.prod(shape))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    step = max(gap * 2, (high - low) / max(n, 1))
    grid = low + step * np.arange(n)
    values = grid + rng.uniform(0, step - gap, size=n)
    return rng.permutation(values).reshape(shape)


@st.composite
def away_from_zero(draw, shape, margin=0.1, high=2.0):
    """Values with |x| >= margin (ReLU, abs, clip kinks at 0)."""
    magnitude = draw(arrays(shape, margin, high))
    signs = draw(hnp.arrays(np.bool_, shape))
    return np.where(signs, magnitude, -magnitude)


@st.composite
def spd_batches(draw, batch=(1, 3), dim=(2, 6), max_condition=50.0):
    """Symmetric positive definite batches (B, d, d) with bounded condition number.

    A = Q diag(lambda) Q^T with Q a random orthogonal matrix and eigenvalues
    in [1, max_condition] (times a random scale).
    """
    b = draw(st.integers(*batch))
    d = draw(st.integers(*dim))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((b, d, d)))
    lam = rng.uniform(1.0, max_condition, size=(b, d)) * draw(st.floats(0.1, 10.0))
    return (q * lam[:, None, :]) @ np.swapaxes(q, -1, -2)


@st.composite
def feature_maps(draw, batch=(1, 3), channels=(1, 5), height=(1, 5), width=(1, 5)):
    """(B, C, H, W) float64 feature maps with bounded values."""
    shape = (
        draw(st.integers(*batch)),
        draw(st.integers(*channels)),
        draw(st.integers(*height)),
        draw(st.integers(*width)),
    )
    return draw(arrays(shape))


@st.composite
def conv_configs(draw):
    """A small convolution problem: input shape, weight shape, stride, padding."""
    b, c_in, c_out = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    kh, kw = draw(st.sampled_from([(1, 1), (3, 3), (2, 3)]))
    stride, padding = draw(st.integers(1, 2)), draw(st.integers(0, 1))
    h = draw(st.integers(max(kh - 2 * padding, 1), 6))
    w = draw(st.integers(max(kw - 2 * padding, 1), 6))
    return dict(x_shape=(b, c_in, h, w), w_shape=(c_out, c_in, kh, kw), stride=stride, padding=padding)


@st.composite
def logits_with_margin(draw, batch=(1, 4), n=(2, 8), k=None, margin=0.05):
    """(B, N) logits and a K with a gap of at least ``margin`` around every rank.

    Every pair of logits in a row differs by >= margin, so the Top-K set is
    stable under the finite-difference perturbation (no kink).
    """
    b = draw(st.integers(*batch))
    num = draw(st.integers(*n))
    kk = draw(st.integers(2, num)) if k is None else k
    rows = [draw(distinct_arrays((num,), gap=margin, low=-3.0, high=3.0)) for _ in range(b)]
    return np.stack(rows), kk


# ----- gating / dispatch (helper C: tests/test_gating.py, test_dispatch.py, test_mixture.py) -----
@st.composite
def topk_indices(draw, batch=(1, 4), n=(2, 6), k=None):
    """(indices (B, K) int64, N): each row K distinct component ids in random order, as Top-K gives."""
    b = draw(st.integers(*batch))
    num = draw(st.integers(*n))
    kk = draw(st.integers(2, num)) if k is None else k
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    rows = [rng.permutation(num)[:kk] for _ in range(b)]
    return np.stack(rows).astype(np.int64), num


@st.composite
def topk_weights(draw, batch=(1, 4), n=(2, 6), k=None):
    """(weights (B, N) float64, indices (B, K), N): positive weights summing to 1 on each row's
    K selected components and exactly 0 elsewhere (what ``topk_softmax`` returns)."""
    indices, num = draw(topk_indices(batch, n, k))
    b, kk = indices.shape
    raw = draw(arrays((b, kk), 0.1, 1.0))
    weights = np.zeros((b, num))
    weights[np.arange(b)[:, None], indices] = raw / raw.sum(axis=1, keepdims=True)
    return weights, indices, num


# ===== Second-order pooling (helper B): covariance matrices of real feature maps =====
def covariance_of_features(features):
    """(B, d, L) features -> (B, d, d) biased covariances (1/L) X_c X_cᵀ, in plain NumPy."""
    centred = features - features.mean(axis=2, keepdims=True)
    return centred @ np.swapaxes(centred, 1, 2) / features.shape[2]


@st.composite
def covariance_batches(draw, batch=(1, 3), dim=(2, 6), positions=(2, 5), relu=False):
    """Covariance matrices (B, d, d) of random feature maps with L positions.

    With L <= d the matrices are rank-deficient (rank <= L - 1), like the
    paper's d = 128 channels over an 8×8 = 64-position map; use small analogues
    (e.g. d = 6, L = 4) for finite differences. ``relu=True`` takes ReLU
    features (non-negative, as after the backbone). Retries until every trace
    is positive (an all-constant feature map has zero covariance).
    """
    b, d, length = draw(st.integers(*batch)), draw(st.integers(*dim)), draw(st.integers(*positions))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    while True:
        features = rng.standard_normal((b, d, length))
        if relu:
            features = np.maximum(features, 0.0)
        sigma = covariance_of_features(features)
        if np.trace(sigma, axis1=1, axis2=2).min() > 1e-3:
            return sigma


# ----- helper A1 (CNN layers): pooling configurations -------------------------------------
@st.composite
def pool_configs(draw):
    """A small average-pooling problem: input shape, kernel, stride (None = kernel), padding.

    Padding is at most half the kernel (the rule avg_pool2d enforces) and the
    input is at least as large as the padded window.
    """
    b, c = draw(st.integers(1, 2)), draw(st.integers(1, 3))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))
    stride = draw(st.one_of(st.none(), st.integers(1, 3), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    h = draw(st.integers(max(kh - 2 * ph, 1), 6))
    w = draw(st.integers(max(kw - 2 * pw, 1), 6))
    return dict(x_shape=(b, c, h, w), kernel=(kh, kw), stride=stride, padding=(ph, pw))


@st.composite
def gaussian_feature_maps(draw, batch=(1, 2), channels=(2, 6), height=(2, 3), width=(2, 3)):
    """(B, C, H, W) standard normal feature maps from a drawn seed.

    Unlike ``feature_maps`` (whose minimal example is all zeros), every map has
    spread, so its covariance has a positive trace and, when H·W > C, full rank.
    """
    shape = (
        draw(st.integers(*batch)),
        draw(st.integers(*channels)),
        draw(st.integers(*height)),
        draw(st.integers(*width)),
    )
    return np.random.default_rng(draw(st.integers(0, 2**31 - 1))).standard_normal(shape)
