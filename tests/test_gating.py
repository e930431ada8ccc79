"""Gating functions (paper Eqs. 2-4): noisy logits, Top-K softmax, balance loss.

Forward vs NumPy oracles written here, float64 gradient checks with random
cotangents (away from the Top-K kink), the identities of derivations/08 and 09,
invariants, bad input, backend parity.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import gmsop_np as gs
import gmsop_np.functional as F
from gmsop_np.random import CounterRNG

from strategies import arrays, logits_with_margin, topk_weights


# ----- oracles ---------------------------------------------------------------------------------
def softplus_oracle(z):
    return np.logaddexp(0.0, z)


def topk_softmax_oracle(h, k):
    """Row by row: sort (stable, larger first), softmax over the first k, zeros elsewhere."""
    w = np.zeros_like(h)
    idx = np.zeros((h.shape[0], k), dtype=np.int64)
    for b, row in enumerate(h):
        order = sorted(range(len(row)), key=lambda i: (-row[i], i))[:k]  # ties: lower index first
        e = np.exp(row[order] - row[order].max())
        w[b, order] = e / e.sum()
        idx[b] = order
    return w, idx


def balance_oracle(w, alpha=100.0, ddof=1):
    v = w.sum(axis=0)
    return alpha * np.std(v, ddof=ddof) ** 2 / np.mean(v) ** 2


# ----- noisy logits (Eq. 2, derivations/08 eqs. (1)-(3)) ----------------------------------------
@st.composite
def gate_problem(draw):
    b, n, d = draw(st.integers(1, 3)), draw(st.integers(2, 4)), draw(st.integers(1, 4))
    shared = draw(st.booleans())
    return (
        draw(arrays((b, d))),
        draw(arrays((n, d))),
        draw(arrays((n, d))),
        draw(arrays((b, 1 if shared else n), -2.0, 2.0)),
    )


@given(problem=gate_problem())
def test_noisy_logits_forward_and_backward_eq1_eq3(problem):
    u, Wg, Wn, gamma = problem
    H = F.noisy_gate_logits(gs.Tensor(u), gs.Tensor(Wg), gs.Tensor(Wn), noise=gamma)
    np.testing.assert_allclose(H.data, u @ Wg.T + gamma * softplus_oracle(u @ Wn.T), rtol=1e-12, atol=1e-12)
    gs.check_backward(lambda a, b, c: F.noisy_gate_logits(a, b, c, noise=gamma), [u, Wg, Wn])


def test_noisy_logits_vjp_matches_eq3(rng):
    u, Wg, Wn = rng.standard_normal((3, 5)), rng.standard_normal((4, 5)), rng.standard_normal((4, 5))
    gamma, Hbar = rng.standard_normal((3, 1)), rng.standard_normal((3, 4))
    ts = [gs.Tensor(a, requires_grad=True) for a in (u, Wg, Wn)]
    F.noisy_gate_logits(*ts, noise=gamma).backward(Hbar)
    Zbar = Hbar * gamma / (1 + np.exp(-(u @ Wn.T)))  # eq. (3): Hbar * Gamma * sigma(Z)
    np.testing.assert_allclose(ts[0].grad.data, Hbar @ Wg + Zbar @ Wn, rtol=1e-12)
    np.testing.assert_allclose(ts[1].grad.data, Hbar.T @ u, rtol=1e-12)
    np.testing.assert_allclose(ts[2].grad.data, Zbar.T @ u, rtol=1e-12)


def test_noisy_logits_without_noise_are_clean_and_ignore_Wn(rng):
    u, Wg = rng.standard_normal((3, 5)), rng.standard_normal((4, 5))
    H = F.noisy_gate_logits(gs.Tensor(u), gs.Tensor(Wg), gs.Tensor(np.full((4, 5), np.nan)), noise=None)
    np.testing.assert_allclose(H.data, u @ Wg.T, rtol=1e-12)


def test_noisy_logits_softplus_is_stable_for_huge_inputs():
    u = np.array([[1000.0], [-1000.0]])
    H = F.noisy_gate_logits(
        gs.Tensor(u), gs.Tensor(np.zeros((2, 1))), gs.Tensor(np.ones((2, 1))), noise=np.ones((2, 1))
    )
    np.testing.assert_allclose(H.data, [[1000.0, 1000.0], [0.0, 0.0]], atol=1e-300)


def test_draw_gate_noise_shapes_and_reproducibility():
    a = F.draw_gate_noise(CounterRNG(3), 5, 7, "shared")
    b = F.draw_gate_noise(3, 5, 7, "shared")
    assert a.shape == (5, 1) and a.dtype == np.float64
    np.testing.assert_array_equal(a, b)
    assert F.draw_gate_noise(CounterRNG(3), 5, 7, "independent", np.float32).shape == (5, 7)
    with pytest.raises(ValueError, match="noise mode"):
        F.draw_gate_noise(CounterRNG(3), 5, 7, "gaussian")
    with pytest.raises(TypeError, match="CounterRNG"):
        F.draw_gate_noise(np.random.default_rng(3), 5, 7)


def test_noisy_logits_bad_shapes():
    u = gs.Tensor(np.ones((3, 4)))
    with pytest.raises(ValueError, match=r"W_g must be \(N, D\) with D = 4"):
        F.noisy_gate_logits(u, np.ones((2, 5)))
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        F.noisy_gate_logits(gs.Tensor(np.ones((3, 4, 1))), np.ones((2, 4)))
    with pytest.raises(ValueError, match="noise must have shape"):
        F.noisy_gate_logits(u, np.ones((2, 4)), np.ones((2, 4)), noise=np.ones((2, 1)))
    with pytest.raises(ValueError, match="W_n is None"):
        F.noisy_gate_logits(u, np.ones((2, 4)), None, noise=np.ones((3, 1)))


# ----- Top-K softmax (Eq. 3, derivations/08 eqs. (4)-(8)) ----------------------------------------
@given(problem=logits_with_margin())
def test_topk_softmax_forward_and_backward_eq5_eq7(problem):
    h, k = problem
    w, idx = F.topk_softmax(gs.Tensor(h), k)
    w_ref, idx_ref = topk_softmax_oracle(h, k)
    np.testing.assert_allclose(w.data, w_ref, rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(idx.data, idx_ref)
    assert not idx.requires_grad
    gs.check_backward(lambda t: F.topk_softmax(t, k)[0], [h])


@given(problem=logits_with_margin(n=(3, 8)))
def test_unselected_logits_get_exactly_zero_gradient_eq7(problem):
    h, k = problem
    t = gs.Tensor(h, requires_grad=True)
    w, idx = F.topk_softmax(t, k)
    gw = np.random.default_rng(0).standard_normal(h.shape)
    w.backward(gw)
    selected = np.zeros(h.shape, dtype=bool)
    selected[np.arange(h.shape[0])[:, None], idx.data] = True
    assert np.all(w.data[~selected] == 0.0)  # exactly zero weights
    assert np.all(t.grad.data[~selected] == 0.0)  # exactly zero gradient
    wd = w.data  # and eq. (7) on the selected ones
    np.testing.assert_allclose(t.grad.data, wd * (gw - (wd * gw).sum(1, keepdims=True)), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(t.grad.data.sum(axis=1), 0.0, atol=1e-12)  # shift invariance


@given(problem=logits_with_margin())
def test_topk_softmax_is_renormalised_softmax_eq6(problem):
    h, k = problem
    w, idx = F.topk_softmax(gs.Tensor(h), k)
    p = np.exp(h - h.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    mask = np.zeros(h.shape, dtype=bool)
    mask[np.arange(h.shape[0])[:, None], idx.data] = True
    expected = np.where(mask, p, 0.0) / np.where(mask, p, 0.0).sum(1, keepdims=True)
    np.testing.assert_allclose(w.data, expected, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(w.data.sum(1), 1.0, rtol=1e-14)


def test_topk_ties_lower_index_wins_eq4():
    h = np.array([[1.0, 2.0, 2.0, 2.0, 0.0], [0.5, 0.5, 0.5, 0.5, 0.5]])
    w, idx = F.topk_softmax(gs.Tensor(h), 2)
    np.testing.assert_array_equal(idx.data, [[1, 2], [0, 1]])
    np.testing.assert_allclose(w.data, [[0, 0.5, 0.5, 0, 0], [0.5, 0.5, 0, 0, 0]])


def test_topk_softmax_large_logits_do_not_overflow():
    w, _ = F.topk_softmax(gs.Tensor(np.array([[1000.0, 999.0, -1000.0]])), 2)
    e = np.exp(-1.0)
    np.testing.assert_allclose(w.data, [[1 / (1 + e), e / (1 + e), 0.0]], rtol=1e-14)


def test_topk_softmax_second_order_gradient():
    """The VJP is written in differentiable ops: the gradient of <v, dw/dh^T gw> matches
    central differences of the first gradient along a random direction."""
    rng = np.random.default_rng(1)
    h = np.array([[0.3, -1.2, 2.0, 0.9], [1.5, 0.1, -0.4, 0.7]])  # margin 0.4 around rank 3
    gw, v, d = (rng.standard_normal(h.shape) for _ in range(3))

    def first_grad(hh, create_graph=False):
        t = gs.Tensor(hh, requires_grad=True)
        w, _ = F.topk_softmax(t, 3)
        gs.backward([w], [gw], create_graph=create_graph)
        return t, t.grad

    t, g = first_grad(h, create_graph=True)
    F.sum(g * gs.Tensor(v)).backward()
    analytic = np.vdot(t.grad.data - g.data, d)  # t.grad now holds g + d<v, g>/dh
    eps = 1e-6
    numeric = (np.vdot(v, first_grad(h + eps * d)[1].data) - np.vdot(v, first_grad(h - eps * d)[1].data)) / (2 * eps)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("k, n", [(1, 4), (0, 4), (5, 4), (-1, 3)])
def test_topk_rejects_k_outside_2_to_n(k, n):
    with pytest.raises(ValueError, match=r"2 <= k <= N"):
        F.topk_softmax(gs.Tensor(np.zeros((2, n))), k)


def test_topk_rejects_bad_input():
    with gs.debug():  # value checks read the data: debug mode only
        with pytest.raises(ValueError, match="NaN or infinite"):
            F.topk_softmax(gs.Tensor(np.array([[0.0, np.nan, 1.0]])), 2)
        with pytest.raises(ValueError, match="NaN or infinite"):
            F.topk_softmax(gs.Tensor(np.array([[0.0, np.inf, 1.0]])), 2)
    with pytest.raises(ValueError, match=r"\(B, N\)"):
        F.topk_softmax(gs.Tensor(np.zeros(4)), 2)
    with pytest.raises(TypeError, match=r"k \(2 <= k <= N = 4.*must be an integer"):
        F.topk_softmax(gs.Tensor(np.zeros((1, 4))), 2.0)
    with pytest.raises(ValueError, match=r"k \(2 <= k <= N = 4.*must be between 2 and 4, got 5"):
        F.topk_softmax(gs.Tensor(np.zeros((1, 4))), 5)


def test_k_equal_one_would_freeze_the_gate_eq8():
    """Why K >= 2: a softmax over one logit is identically 1, its gradient identically 0."""
    h = gs.Tensor(np.array([[0.3, -1.0, 2.0]]), requires_grad=True)
    w = F.softmax(F.reshape(h[:, 2], (1, 1)), axis=1)
    w.backward(np.array([[5.0]]))
    np.testing.assert_array_equal(w.data, [[1.0]])
    np.testing.assert_array_equal(h.grad.data, 0.0)


# ----- balance loss (Eq. 4, derivations/09) --------------------------------------------------------
@given(problem=topk_weights(), ddof=st.sampled_from([0, 1]), alpha=st.sampled_from([1.0, 100.0]))
def test_balance_loss_forward_and_backward_eq3(problem, ddof, alpha):
    w, _, _ = problem
    L = F.balance_loss(gs.Tensor(w), alpha=alpha, ddof=ddof)
    assert L.shape == ()
    np.testing.assert_allclose(L.data, balance_oracle(w, alpha, ddof), rtol=1e-10, atol=1e-12)
    gs.check_backward(lambda t: F.balance_loss(t, alpha=alpha, ddof=ddof), [w])


@given(
    w=st.tuples(st.integers(1, 4), st.integers(2, 5)).flatmap(lambda s: arrays(s, 0.1, 2.0)),
    ddof=st.sampled_from([0, 1]),
)
def test_balance_loss_gradient_eq4_matches_the_composed_loss(w, ddof):
    """Rows need not sum to 1: the mu-term of eq. (4) matters, compare with the engine's own ops."""

    def composed(t):
        v = F.sum(t, axis=0)
        mu = F.mean(v)
        return 100.0 * F.sum((v - mu) ** 2) / (v.shape[0] - ddof) / (mu * mu)

    t1, t2 = gs.Tensor(w, requires_grad=True), gs.Tensor(w, requires_grad=True)
    F.balance_loss(t1, ddof=ddof).backward()
    composed(t2).backward()
    np.testing.assert_allclose(t1.grad.data, t2.grad.data, rtol=1e-10, atol=1e-12)
    v, n = w.sum(0), w.shape[1]  # eq. (4) by hand
    mu, S = v.mean(), ((v - v.mean()) ** 2).sum() / (n - ddof)
    gv = 200.0 / mu**2 * ((v - mu) / (n - ddof) - S / (n * mu))
    np.testing.assert_allclose(t1.grad.data, np.broadcast_to(gv, w.shape), rtol=1e-10, atol=1e-12)  # eq. (6)
    gs.check_backward(lambda t: F.balance_loss(t, ddof=ddof), [w])


@given(problem=topk_weights())
def test_mean_importance_is_b_over_n_eq2(problem):
    w, _, n = problem
    np.testing.assert_allclose(w.sum(0).mean(), w.shape[0] / n, rtol=1e-12)


@pytest.mark.parametrize("n, k", [(4, 2), (16, 8), (8, 3)])
def test_balance_loss_zero_when_balanced_eq7(n, k):
    w = np.zeros((n, n))
    for s in range(n):
        w[s, [(s + j) % n for j in range(k)]] = 1.0 / k
    t = gs.Tensor(w, requires_grad=True)
    L = F.balance_loss(t)
    L.backward()
    assert abs(L.item()) < 1e-12
    np.testing.assert_allclose(t.grad.data, 0.0, atol=1e-12)


@pytest.mark.parametrize("n, k, b", [(4, 2, 3), (16, 8, 10), (8, 3, 5)])
def test_balance_loss_total_collapse_eq8(n, k, b):
    w = np.zeros((b, n))
    w[:, :k] = 1.0 / k
    np.testing.assert_allclose(
        F.balance_loss(gs.Tensor(w), alpha=100.0, ddof=1).item(), 100.0 * (n / k - 1) * n / (n - 1), rtol=1e-12
    )
    np.testing.assert_allclose(
        F.balance_loss(gs.Tensor(w), alpha=100.0, ddof=0).item(), 100.0 * (n / k - 1), rtol=1e-12
    )


def test_balance_gradient_through_topk_pushes_overused_components_down():
    """derivations/09 §2: the mu-term cancels through Top-K; overused logits go down."""
    h = np.tile(np.array([[3.0, 2.0, 1.0, 0.0]]), (4, 1)) + np.arange(4)[:, None] * 1e-3
    t = gs.Tensor(h, requires_grad=True)
    w, _ = F.topk_softmax(t, 2)
    F.balance_loss(w).backward()
    np.testing.assert_allclose(t.grad.data.sum(1), 0.0, atol=1e-12)
    assert np.all(t.grad.data[:, 2:] == 0.0)
    # gradient descent lowers the more-used component 0 relative to component 1
    assert np.all(t.grad.data[:, 0] > t.grad.data[:, 1])


def test_balance_loss_bad_arguments():
    w = gs.Tensor(np.full((2, 3), 1 / 3))
    with pytest.raises(ValueError, match="ddof must be between 0 and 1, got 2"):
        F.balance_loss(w, ddof=2)
    with gs.debug(), pytest.raises(ValueError, match="weights must be >= 0, found -0.5"):
        F.balance_loss(gs.Tensor(np.array([[0.5, -0.5], [1.0, 0.0]])))
    with pytest.raises(ValueError, match="N > ddof"):
        F.balance_loss(gs.Tensor(np.ones((2, 1))), ddof=1)
    with pytest.raises(ValueError, match="alpha"):
        F.balance_loss(w, alpha=-1.0)
    with pytest.raises(ValueError, match=r"\(B, N\)"):
        F.balance_loss(gs.Tensor(np.ones(3)))


# ----- invariants and backends -----------------------------------------------------------------------
def test_inputs_not_mutated_and_float32_preserved(rng):
    h = rng.standard_normal((3, 5)).astype(np.float32)
    h0 = h.copy()
    w, _ = F.topk_softmax(gs.Tensor(h), 3)
    L = F.balance_loss(w)
    np.testing.assert_array_equal(h, h0)
    assert w.dtype == np.float32 and L.dtype == np.float32


def test_backend_parity(xp, rng):
    u, Wg, Wn = rng.standard_normal((4, 6)), rng.standard_normal((5, 6)), rng.standard_normal((5, 6))
    gamma = F.draw_gate_noise(CounterRNG(0), 4, 5, xp=np)  # a host oracle needs host noise
    ref_w, ref_i = topk_softmax_oracle(u @ Wg.T + gamma * softplus_oracle(u @ Wn.T), 3)
    H = F.noisy_gate_logits(gs.Tensor(xp.asarray(u)), gs.Tensor(xp.asarray(Wg)), gs.Tensor(xp.asarray(Wn)), noise=gamma)
    w, idx = F.topk_softmax(H, 3)
    L = F.balance_loss(w)
    np.testing.assert_allclose(gs.to_cpu(w.data), ref_w, rtol=1e-10)
    np.testing.assert_array_equal(gs.to_cpu(idx.data), ref_i)
    np.testing.assert_allclose(float(L.item()), balance_oracle(ref_w), rtol=1e-10)


def test_tie_break_priorities_reorder_only_exactly_equal_logits():
    """eq. (4) with priorities: ties are ranked by priority, unequal logits are not touched."""
    logits = np.array([[1.0, 3.0, 1.0, 1.0, 2.0]])
    _, lowest = F.topk_softmax(logits, 3)
    assert lowest.data.tolist() == [[1, 4, 0]], "default: the lower index wins a tie"
    priorities = np.array([[0.9, 0.5, 0.1, 0.7, 0.3]])  # among the tied 0, 2, 3: 2 first
    weights, chosen = F.topk_softmax(logits, 3, tie_break=priorities)
    assert chosen.data.tolist() == [[1, 4, 2]]
    expected = np.exp([1.0, 2.0, 3.0]) / np.exp([1.0, 2.0, 3.0]).sum()
    np.testing.assert_allclose(weights.data[0, [2, 4, 1]], expected)
    distinct = np.array([[0.3, -1.0, 2.0, 0.7]])
    _, a = F.topk_softmax(distinct, 2)
    _, b = F.topk_softmax(distinct, 2, tie_break=np.array([[0.0, 0.1, 0.9, 0.8]]))
    assert a.data.tolist() == b.data.tolist() == [[2, 3]]
    with pytest.raises(ValueError, match="tie_break must have the logits' shape"):
        F.topk_softmax(logits, 2, tie_break=np.zeros((1, 4)))
