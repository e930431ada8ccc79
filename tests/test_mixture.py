"""Gated mixture modules (GM-SOP, GM-GAP, Ave-SOP, Ave-GAP) and their heads.

* gradient checks (float64, random cotangent) of a whole tiny GM-SOP, for the
  input and for every parameter;
* sparse == dense (derivations/10_dispatch.md, eq. (8)) on the module;
* the balance loss works (paper Fig. 2): a short seeded training run with
  alpha = 0 collapses onto ~K components, alpha = 100 spreads the samples;
* usage statistics, train/eval behaviour, noise modes, gate init;
* bad input; parameter counts of the paper's models (Table 3).
"""

import numpy as np
import pytest

import gmsop_np as gs
import gmsop_np.functional as F
from gmsop_np.nn import mixture as mx
from gmsop_np.nn.heads import HEADS
from gmsop_np.nn.layers import Conv2d, GlobalAvgPool, ReLU
from gmsop_np.nn.module import Module, Sequential


# ----- helpers ------------------------------------------------------------------------------------
def to_float64(module):
    """Parameters and buffers in float64 (gradient checks need it)."""
    for p in module.parameters():
        p.data = p.data.astype(np.float64)
    for m in module.modules():
        for name, b in list(m._buffers.items()):
            if b is not None:
                m._buffers[name] = b.astype(np.float64)
    return module


def tiny_gmsop(seed=0, noise="shared"):
    """GM-SOP with C=4, N=4, K=2, hidden 5, out 3 (representation 6), float64, random gate."""
    m = to_float64(mx.GMSOP(4, 4, 2, hidden=5, out=3, num_iters=3, noise=noise, rng=seed))
    rng = np.random.default_rng(seed + 100)
    m.W_g.data = rng.standard_normal(m.W_g.shape)  # random gate: logits away from ties
    m.W_n.data = rng.standard_normal(m.W_n.shape)
    return m


def logit_margin(m, x, noise):
    """Smallest gap between the K-th and (K+1)-th logit over the batch (distance to the kink)."""
    with gs.no_grad():
        _, _, logits = m.gate(gs.Tensor(x), noise)
    s = -np.sort(-logits.data, axis=1)
    return float((s[:, m.k - 1] - s[:, m.k]).min())


def check_parameter_grads(fn, module, num_directions=3, eps=1e-6, seed=0):
    """Directional finite-difference check of d<u, fn()>/d(all parameters), random u and directions."""
    rng = np.random.default_rng(seed)
    params = module.parameters()
    y = fn()
    u = rng.standard_normal(y.shape)
    module.zero_grad()
    y.backward(u)
    grads = [p.grad.data if p.grad is not None else np.zeros_like(p.data) for p in params]
    for _ in range(num_directions):
        dirs = [rng.standard_normal(p.shape) for p in params]
        analytic = sum(np.vdot(g, d) for g, d in zip(grads, dirs))
        values = []
        for sign in (1.0, -1.0):
            originals = [p.data for p in params]
            for p, d in zip(params, dirs):
                p.data = p.data + sign * eps * d
            with gs.no_grad():
                values.append(np.vdot(u, fn().data))
            for p, o in zip(params, originals):
                p.data = o
        numeric = (values[0] - values[1]) / (2 * eps)
        assert abs(analytic - numeric) <= 1e-6 + 1e-5 * abs(numeric), (analytic, numeric)


# ----- gradient checks of a whole tiny GM-SOP ----------------------------------------------------------
def test_tiny_gmsop_input_gradient(rng):
    m = tiny_gmsop()
    x = rng.standard_normal((4, 4, 3, 3))
    gamma = rng.standard_normal((4, 1))
    assert logit_margin(m, x, gamma) > 1e-3
    gs.check_backward(lambda t: m(t, noise=gamma), [x], mode="elementwise")


@pytest.mark.parametrize("noise", ["shared", "independent"])
def test_tiny_gmsop_parameter_gradients(rng, noise):
    m = tiny_gmsop(noise=noise)
    x = gs.Tensor(rng.standard_normal((5, 4, 3, 3)))
    gamma = rng.standard_normal((5, 1 if noise == "shared" else 4))
    assert logit_margin(m, x.data, gamma) > 1e-3
    check_parameter_grads(lambda: m(x, noise=gamma), m)
    assert float(np.abs(m.W_n.grad.data).sum()) > 0  # the noise weights learn (Eq. 2)

    def balance():
        m(x, noise=gamma)
        return m.balance_loss

    check_parameter_grads(balance, m, seed=1)


# ----- sparse == dense (derivations/10_dispatch.md, eq. (8)) ---------------------------------------------
def test_sparse_equals_dense_eq8(rng):
    m = tiny_gmsop(seed=3)
    x = rng.standard_normal((6, 4, 3, 3))
    gamma = rng.standard_normal((6, 1))
    u = rng.standard_normal((6, 6))

    def grads():
        return [p.grad.data.copy() if p.grad is not None else np.zeros_like(p.data) for p in m.parameters()]

    xs = gs.Tensor(x, requires_grad=True)
    m.zero_grad()
    y_sparse = m(xs, noise=gamma)
    y_sparse.backward(u)
    g_sparse = grads()
    assert m.usage_counts.sum() == 6 * 2 and (m.usage_counts < 6).any()  # really sparse

    xd = gs.Tensor(x, requires_grad=True)
    m.zero_grad()
    w, _, _ = m.gate(xd, gamma)
    y_dense = None
    for i, comp in enumerate(m.components):  # every component, every sample
        term = F.reshape(w[:, i], (6, 1)) * m.tail(comp(xd))
        y_dense = term if y_dense is None else y_dense + term
    y_dense.backward(u)
    np.testing.assert_allclose(y_sparse.data, y_dense.data, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(xs.grad.data, xd.grad.data, rtol=1e-10, atol=1e-13)
    for (name, _), a, b in zip(m.named_parameters(), g_sparse, grads()):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13, err_msg=name)


# ----- the component bank (derivations/10_dispatch.md, eqs. (10)-(12)) ---------------------------------------
def test_component_bank_is_n_separate_conv_relu_stacks(rng):
    """Same initial weights as N separate Conv2d layers drawn in order, and row p runs through component route[p]."""
    bank = mx.ComponentBank(3, (4, 5, 2), rng=7)
    draws = np.random.default_rng(7)
    stacks = [
        [Conv2d(4, 5, 1, rng=draws), ReLU(), Conv2d(5, 2, 1, rng=draws), ReLU()] for _ in range(bank.num_components)
    ]
    for i, stack in enumerate(stacks):
        np.testing.assert_array_equal(bank.W1.data[i], stack[0].W.data[:, :, 0, 0])
        np.testing.assert_array_equal(bank.W2.data[i], stack[2].W.data[:, :, 0, 0])
    rows = rng.standard_normal((5, 4, 2, 3)).astype(np.float32)
    components = np.array([2, 0, 2, 1, 0])
    route, _ = F.route_matrix(components[:, None], 3, np.float32)
    got = bank(gs.Tensor(rows), route).data
    for p, i in enumerate(components):
        expected = Sequential(*stacks[i])(gs.Tensor(rows[p : p + 1])).data[0]
        np.testing.assert_allclose(got[p], expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(bank[i](gs.Tensor(rows[p : p + 1])).data[0], expected, rtol=1e-5, atol=1e-6)
    assert len(bank) == 3 and len(list(bank)) == 3 and bank.num_parameters() == 3 * (4 * 5 + 5 * 2)


def test_component_bank_gradients_eq12(rng):
    """float64 directional check of every stacked weight; a component nobody selected gets exactly 0 (not None)."""
    bank = to_float64(mx.ComponentBank(4, (3, 4, 2), rng=1))
    rows = rng.standard_normal((5, 3, 2, 2))
    route, _ = F.route_matrix(np.array([[0], [2], [0], [3], [2]]), 4, np.float64)
    check_parameter_grads(lambda: bank(gs.Tensor(rows), route), bank)
    bank.zero_grad()
    F.sum(bank(gs.Tensor(rows), route)).backward()
    assert not bank.W1.grad.data[1].any() and not bank.W2.grad.data[1].any()
    assert bank.W1.grad.data[0].any() and bank.W2.grad.data[3].any()
    x = rng.standard_normal((5, 3, 2, 2))
    gs.check_backward(lambda t: bank(t, route), [x])
    with pytest.raises(ValueError, match=r"route \(R, 4\)"):
        bank(gs.Tensor(rows), route[:, :3])


# ----- the balance loss works (paper Fig. 2) ----------------------------------------------------------
def _train_usage(alpha, steps=100, batch=32, seed=0, n=8, k=4):
    """Train a tiny GM-GAP-8-4 head (default gate: constant init, shared noise) on two Gaussian
    classes with plain SGD; return the usage counts of the last 10 steps."""
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((2, 8, 1, 1)) * 1.5
    head = mx.MixtureHead(mx.GMGAP(8, n, k, width=8, alpha=alpha, rng=seed), 2, rng=seed)
    for step in range(steps):
        if step == steps - 10:
            head.reset_usage()
        labels = rng.integers(0, 2, batch)
        x = gs.Tensor((means[labels] + rng.standard_normal((batch, 8, 2, 2))).astype(np.float32))
        logits = head(x)
        loss = F.objective(logits, labels, head.balance_loss)  # CE_mean + L_B / B
        head.zero_grad()
        loss.backward()
        for p in head.parameters():
            if p.grad is not None:  # unselected components get no gradient
                p.data -= np.float32(0.1) * p.grad.data
    return head.usage_counts.copy()


@pytest.mark.report
def test_balance_loss_spreads_usage_fig2():
    """Paper Fig. 2: without the balance loss ~K components receive almost every sample;
    with alpha = 100 (and the CE_mean + L_B / B convention) the counts are near uniform."""
    cv, top_k_share = {}, {}
    for alpha in (0.0, 100.0):
        counts = _train_usage(alpha)
        assert counts.sum() == 10 * 32 * 4
        cv[alpha] = counts.std() / counts.mean()
        top_k_share[alpha] = np.sort(counts)[-4:].sum() / counts.sum()
        print(
            f"alpha={alpha:5.0f}: usage over the last 10 steps {counts.tolist()}, CV {cv[alpha]:.2f}, "
            f"top-4 share {top_k_share[alpha]:.2f}"
        )
    # (a total collapse of N = 8, K = 4 has CV = sqrt(8/4 - 1) = 1 and top-4 share 1; uniform: 0 and 0.5)
    assert cv[0.0] > 0.4 and top_k_share[0.0] > 0.8
    assert cv[100.0] < 0.15 and top_k_share[100.0] < 0.6
    assert cv[0.0] > 5 * cv[100.0]


# ----- usage, train / eval, noise, init ------------------------------------------------------------------
def test_usage_counts_train_only_and_reset(rng):
    m = mx.GMGAP(3, 4, 2, width=4, rng=0)
    x = gs.Tensor(rng.standard_normal((5, 3, 2, 2)).astype(np.float32))
    m(x)
    m(x)
    assert m.usage_counts.dtype == np.int64 and m.usage_counts.sum() == 2 * 5 * 2
    assert isinstance(m.balance_loss, gs.Tensor) and m.balance_loss.shape == ()
    m.eval()
    before = m.usage_counts.copy()
    y1, y2 = m(x), m(x)
    np.testing.assert_array_equal(m.usage_counts, before)  # eval forwards are not counted
    assert m.balance_loss is None
    np.testing.assert_array_equal(y1.data, y2.data)  # no noise in evaluation
    m.reset_usage()
    np.testing.assert_array_equal(m.usage_counts, np.zeros(4))


def test_noise_is_drawn_in_training_only_and_reproducible(rng):
    x = gs.Tensor(rng.standard_normal((6, 3, 2, 2)).astype(np.float32))

    def make():
        m = mx.GMGAP(3, 4, 2, width=4, rng=1)
        r = np.random.default_rng(5)
        m.W_g.data = r.standard_normal(m.W_g.shape).astype(np.float32)
        m.W_n.data = r.standard_normal(m.W_n.shape).astype(np.float32)
        return m

    a, b = make(), make()
    first = a.gate(x)[2].data
    np.testing.assert_array_equal(first, b.gate(x)[2].data)  # same seed -> same noise
    assert not np.allclose(first, a.gate(x)[2].data)  # a fresh draw every forward
    a.eval()
    clean = a.gate(x)[2].data
    u = a.gate_features(x).data
    np.testing.assert_allclose(clean, u @ a.W_g.data.T, rtol=1e-5)  # gamma = 0 in evaluation
    assert not np.allclose(first, clean)


def test_shared_noise_keeps_ties_independent_noise_breaks_them(rng):
    """Constant init (official release): all logits tie. Shared noise moves them together, so with
    the deterministic tie rule components 0..K-1 get everyone; independent noise spreads the first
    batch by itself (the default random tie-break does too: next test)."""
    x = gs.Tensor(rng.standard_normal((16, 3, 2, 2)).astype(np.float32))
    shared = mx.GMGAP(3, 6, 2, width=4, rng=0, noise="shared", tie_break="lowest")
    np.testing.assert_allclose(shared.W_g.data, 1 / 4)
    shared(x)
    np.testing.assert_array_equal(shared.usage_counts, [16, 16, 0, 0, 0, 0])
    independent = mx.GMGAP(3, 6, 2, width=4, rng=0, noise="independent")
    independent(x)
    assert (independent.usage_counts > 0).sum() >= 5
    zeros = mx.GMGAP(3, 6, 2, width=4, rng=0, gate_init="zeros")
    assert np.all(zeros.W_g.data == 0) and np.all(zeros.W_n.data == 0)


def test_average_mixtures_are_plain_means(rng):
    x = gs.Tensor(rng.standard_normal((3, 4, 2, 2)))
    ave = to_float64(mx.AveGAP(4, 3, width=5, rng=0))
    expected = np.mean([F.global_avg_pool(c(x)).data for c in ave.components], axis=0)
    np.testing.assert_allclose(ave(x).data, expected, rtol=1e-12)
    assert ave.balance_loss is None and ave.usage_counts.tolist() == [3, 3, 3]
    sop = to_float64(mx.AveSOP(4, 2, hidden=5, out=3, num_iters=3, rng=0))
    expected = np.mean([sop.tail(c(x)).data for c in sop.components], axis=0)
    np.testing.assert_allclose(sop(x).data, expected, rtol=1e-12)
    assert sop.representation_dim == 6
    gs.check_backward(lambda t: sop(t), [rng.standard_normal((2, 4, 2, 2))], mode="directional")


# ----- heads and registry --------------------------------------------------------------------------------
def test_heads_are_registered_and_follow_the_preset(rng):
    assert {"gmsop", "gmgap", "avesop", "avegap"} <= set(HEADS)
    assert HEADS["gmsop"].second_order and not HEADS["gmgap"].second_order
    kw = dict(hidden=5, out=3)
    paper = HEADS["gmsop"].factory(4, 3, preset="paper", rng=0, num_components=4, k=2, **kw)
    official = HEADS["gmsop"].factory(4, 3, preset="official", rng=0, num_components=4, k=2, **kw)
    assert paper.mixture.tail.num_iters == 5 and official.mixture.tail.num_iters == 3
    assert HEADS["avesop"].factory(4, 3, preset="paper", rng=0, k=2, num_iters=7, **kw).mixture.tail.num_iters == 7
    x = gs.Tensor(rng.standard_normal((4, 4, 2, 2)).astype(np.float32))
    for name, extra in [
        ("gmsop", dict(num_components=4, k=2, **kw)),
        ("gmgap", dict(num_components=4, k=2)),
        ("avesop", dict(k=2, **kw)),
        ("avegap", dict(k=2)),
    ]:
        head = HEADS[name].factory(4, 3, preset="paper", rng=0, **extra)
        assert head(x).shape == (4, 3)
        assert head.representation_dim == (6 if "sop" in name else 512)
        assert (head.balance_loss is None) == name.startswith("ave")
        assert head.usage_counts.sum() > 0


def test_defaults_match_the_paper():
    m = mx.GMGAP(rng=0)
    assert (m.num_components, m.k, m.representation_dim, m.alpha, m.ddof) == (16, 8, 512, 100.0, 1)
    assert m.noise == "shared" and m.gate_init == "constant"


# ----- bad input ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 0, 5])
def test_k_outside_2_to_n_is_rejected(k):
    with pytest.raises(ValueError, match=r"k \(components per sample; 2 <= k <= N = 4\) must be between 2 and 4"):
        mx.GMGAP(3, 4, k, width=4, rng=0)


def test_bad_configuration_and_input(rng):
    with pytest.raises(ValueError, match="noise mode"):
        mx.GMGAP(3, 4, 2, width=4, noise="gauss")
    with pytest.raises(ValueError, match="gate_init"):
        mx.GMGAP(3, 4, 2, width=4, gate_init="random")
    m = mx.GMSOP(4, 4, 2, hidden=5, out=3, rng=0)
    with pytest.raises(ValueError, match=r"expects feature maps \(B, 4, h, w\), got \(2, 3, 2, 2\)"):
        m(gs.Tensor(np.ones((2, 3, 2, 2), dtype=np.float32)))


def test_gate_fed_a_different_batch_is_rejected(rng):
    class DropsARow(Module):
        def forward(self, x):
            return F.global_avg_pool(x)[1:]

    m = mx.GatedMixture(DropsARow(), [GlobalAvgPool() for _ in range(3)], 2, 4)
    with pytest.raises(ValueError, match="same batch"):
        m(gs.Tensor(rng.standard_normal((3, 4, 2, 2))))
    with pytest.raises(ValueError, match=r"\(B, 5\) gating features"):
        mx.GatedMixture(GlobalAvgPool(), [GlobalAvgPool()] * 3, 2, 5)(gs.Tensor(np.ones((2, 4, 1, 1))))


# ----- parameter counts (paper Table 3) --------------------------------------------------------------------
PAPER_COUNTS = [
    ("resnet18", "gmgap", 2.3),
    ("resnet18", "gmsop", 10.3),
    ("resnet50", "gmsop", 11.9),
    ("wrn36_2", "gmgap", 8.7),
    ("wrn36_2", "gmsop", 15.7),
]


@pytest.mark.report
def test_parameter_counts_match_table3():
    from gmsop_np import models

    for arch, head, paper in PAPER_COUNTS:
        count = getattr(models, arch)(head=head, num_classes=1000).num_parameters() / 1e6
        print(f"{arch} + {head}-16-8: {count:.2f}M (paper {paper}M, {100 * (count - paper) / paper:+.1f}%)")
        assert abs(count - paper) <= 0.05 * paper, (arch, head, count, paper)


def test_random_tie_break_spreads_the_first_batch_of_a_constant_gate():
    """With the official constant init every logit ties: "lowest" sends every sample to
    components 0..K-1, "random" (the default, like the release's random first Top-K)
    gives every component samples; evaluation stays deterministic."""
    x = gs.Tensor(np.random.default_rng(3).standard_normal((64, 4, 3, 3)).astype(np.float32))
    lowest = mx.GMGAP(4, 8, 2, width=6, tie_break="lowest", rng=0)
    lowest(x)
    assert lowest.usage_counts.tolist() == [64, 64, 0, 0, 0, 0, 0, 0]
    spread = mx.GMGAP(4, 8, 2, width=6, rng=0)
    spread(x)
    assert spread.usage_counts.sum() == 128 and (spread.usage_counts > 0).all()
    spread.eval()
    spread(x)
    assert spread.last_indices.tolist() == [[0, 1]] * 64
