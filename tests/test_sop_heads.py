"""SR-SOP and parametric SR-SOP modules and heads (gmsop_np/nn/sop.py)."""

import numpy as np
import pytest
from hypothesis import given

import gmsop_np as gs
import gmsop_np.functional as F
from gmsop_np.models import resnet18
from gmsop_np.nn.heads import HEADS
from gmsop_np.nn.sop import SRSOP, ParametricSRSOP, triu_dim

import strategies as S


def srsop_by_numpy(x, n):
    """Oracle: covariance (np.cov), √ through eigh when n is None, then the row-major triangle."""
    b, c = x.shape[:2]
    sigma = np.stack([np.cov(x[i].reshape(c, -1), bias=True) for i in range(b)])
    lam, u = np.linalg.eigh(sigma)
    root = (u * np.sqrt(np.maximum(lam, 0))[:, None, :]) @ np.swapaxes(u, 1, 2)
    rows, cols = np.triu_indices(c)
    return root[:, rows, cols]


def test_srsop_is_cov_sqrt_triu_with_8256_dims_for_128_channels(rng):
    x = np.maximum(rng.standard_normal((2, 128, 8, 8)), 0)
    z = SRSOP("ns", num_iters=5)(gs.Tensor(x)).data
    assert z.shape == (2, 8256) == (2, triu_dim(128))
    expected = F.triu_vec(F.sqrtm_newton_schulz(F.cov_pool(x), 5)).data
    np.testing.assert_array_equal(z, expected)


def test_srsop_ns_with_many_iterations_equals_eig_and_numpy_oracle(rng):
    x = rng.standard_normal((3, 4, 3, 4))  # L = 12 > d = 4: full rank
    ns = SRSOP("ns", num_iters=30, eps=0.0)(gs.Tensor(x)).data
    eig = SRSOP("eig")(gs.Tensor(x)).data
    oracle = srsop_by_numpy(x, None)
    np.testing.assert_allclose(eig, oracle, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ns, oracle, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("num_iters", [1, 3, 5])
@given(x=S.gaussian_feature_maps(batch=(1, 2), channels=(6, 6), height=(2, 2), width=(2, 2)))
def test_full_srsop_chain_finite_differences_rank_deficient(num_iters, x):
    # d = 6 channels, L = 4 positions (rank-deficient like d = 128, L = 64)
    gs.check_backward(SRSOP("ns", num_iters=num_iters, eps=0.0), [x], mode="elementwise")


@given(x=S.gaussian_feature_maps(batch=(1, 2), channels=(2, 3), height=(3, 3), width=(3, 4)))
def test_full_srsop_chain_with_eig_finite_differences(x):
    gs.check_backward(SRSOP("eig"), [x], mode="elementwise")


def test_parametric_srsop_structure_and_parameters():
    m = ParametricSRSOP(in_channels=128, hidden=256, out=128, num_iters=5, rng=np.random.default_rng(0))
    shapes = sorted(tuple(p.shape) for p in m.parameters())
    assert shapes == [(128, 256, 1, 1), (256, 128, 1, 1)]  # two 1×1 convs, no bias, no BN
    assert m.num_parameters() == 2 * 128 * 256
    x = gs.Tensor(np.random.default_rng(1).standard_normal((2, 128, 4, 4)).astype(np.float32))
    assert m(x).shape == (2, 8256)


def test_parametric_srsop_is_relu_conv_relu_conv_then_srsop(rng):
    m = ParametricSRSOP(in_channels=3, hidden=5, out=4, num_iters=3, rng=rng)
    x = rng.standard_normal((2, 3, 3, 3))
    w1, w2 = m.conv1.W.data.astype(np.float64), m.conv2.W.data.astype(np.float64)
    h = np.maximum(np.einsum("oc,bchw->bohw", w1[:, :, 0, 0], x), 0)
    h = np.maximum(np.einsum("oc,bchw->bohw", w2[:, :, 0, 0], h), 0)
    expected = SRSOP("ns", 3)(gs.Tensor(h)).data
    np.testing.assert_allclose(m(gs.Tensor(x.astype(np.float32))).data, expected, rtol=2e-4, atol=1e-5)


def test_heads_are_registered_as_second_order_and_take_num_iters_from_the_preset():
    for name in ("srsop", "psrsop"):
        assert HEADS[name].second_order
        for preset, iters in (("paper", 5), ("official", 3)):
            model = resnet18(head=name, num_classes=10, preset=preset)
            pooling = model.head.pooling
            sop = pooling if name == "srsop" else pooling.sop
            assert sop.num_iters == iters
            assert model.head.representation_dim == 8256 and model.head.balance_loss is None
    assert resnet18(head="srsop", preset="official").feature_map_size == 16
    assert resnet18(head="srsop", num_iters=7).head.pooling.num_iters == 7


@pytest.mark.report
def test_parameter_counts_resnet18_sop_heads():
    srsop = resnet18(head="srsop")
    psrsop = resnet18(head="psrsop")
    fc = srsop.head.classifier.fc.num_parameters()
    print(
        f"\nResNet-18-SR-SOP: {srsop.num_parameters():,} parameters (FC {fc:,}); "
        f"parametric SR-SOP: {psrsop.num_parameters():,}; paper/official release ~9.0M"
    )
    assert fc == 8256 * 1000 + 1000  # ≈ 8.3M in the FC
    assert abs(srsop.num_parameters() - 9.0e6) / 9.0e6 < 0.03
    assert psrsop.num_parameters() - srsop.num_parameters() == 2 * 128 * 256


def cross_entropy(logits, labels):
    logp = F.log_softmax(logits, axis=1)
    return -F.mean(logp[np.arange(len(labels)), labels])


@pytest.mark.parametrize("head", ["srsop", "psrsop"])
def test_a_few_training_steps_reduce_the_loss(head):
    rng = np.random.default_rng(0)
    model = resnet18(head=head, num_classes=3, input_size=16, seed=1)  # 2×2 final map
    x = gs.Tensor(rng.standard_normal((4, 3, 16, 16)).astype(np.float32))
    labels = np.array([0, 1, 2, 0])
    losses = []
    for _ in range(4):
        loss = cross_entropy(model(x), labels)
        losses.append(loss.item())
        model.zero_grad()
        loss.backward()
        with gs.no_grad():
            for p in model.parameters():
                p.data -= 0.01 * p.grad.data  # plain SGD
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.5 * losses[0], losses
