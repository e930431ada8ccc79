"""Layers: initialisation, seeding, forward vs oracles written here, train/eval behaviour."""

import numpy as np
import pytest

import gmsop_np as gs
from gmsop_np.nn import BatchNorm1d, BatchNorm2d, Conv2d, Dropout, Flatten, GlobalAvgPool, Linear, ReLU, Sequential


def _t(a):
    return gs.Tensor(np.asarray(a))


def _conv_oracle(x, W, stride, padding):
    """Direct cross-correlation with loops over kernel offsets (small sizes only)."""
    B, C, H, Wd = x.shape
    C_out, _, kh, kw = W.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    Ho, Wo = (H + 2 * padding - kh) // stride + 1, (Wd + 2 * padding - kw) // stride + 1
    y = np.zeros((B, C_out, Ho, Wo))
    for i in range(kh):
        for j in range(kw):
            patch = xp[:, :, i : i + stride * Ho : stride, j : j + stride * Wo : stride]  # (B, C, Ho, Wo)
            y += np.einsum("bchw,oc->bohw", patch, W[:, :, i, j])
    return y


def test_conv2d_he_fan_out_init_and_dtype():
    conv = Conv2d(64, 128, 3, rng=np.random.default_rng(0))
    W = conv.W.data
    assert W.shape == (128, 64, 3, 3) and W.dtype == np.float32 and conv.b is None
    assert abs(W.std() / np.sqrt(2.0 / (128 * 9)) - 1) < 0.02  # fan-out, not fan-in (ratio 2)
    assert abs(W.mean()) < 3 * W.std() / np.sqrt(W.size)
    assert [n for n, _ in conv.named_parameters()] == ["W"]
    with_bias = Conv2d(2, 3, 1, bias=True, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(with_bias.b.data, np.zeros(3, np.float32))


def test_linear_init_bounds():
    fc = Linear(100, 50, rng=np.random.default_rng(0))
    assert fc.W.shape == (50, 100) and fc.b.shape == (50,) and fc.W.dtype == np.float32
    bound = 1 / np.sqrt(100)
    assert np.abs(fc.W.data).max() <= bound and np.abs(fc.W.data).max() > 0.9 * bound
    assert Linear(3, 2, bias=False).b is None


def test_same_seed_same_weights_different_seed_different():
    a = Sequential(Conv2d(3, 4, 3, rng=np.random.default_rng(7)), Linear(4, 2, rng=np.random.default_rng(8)))
    b = Sequential(Conv2d(3, 4, 3, rng=np.random.default_rng(7)), Linear(4, 2, rng=np.random.default_rng(8)))
    c = Conv2d(3, 4, 3, rng=np.random.default_rng(9))
    for (k, u), v in zip(a.state_dict().items(), b.state_dict().values()):
        np.testing.assert_array_equal(u, v, err_msg=k)
    assert not np.array_equal(a[0].W.data, c.W.data)
    with pytest.raises(TypeError, match="Generator"):
        Conv2d(3, 4, 3, rng="seed")


@pytest.mark.parametrize("stride, padding", [(1, 1), (2, 1), (1, 0), (2, 0)])
def test_conv2d_forward_matches_loop_oracle(stride, padding, rng):
    conv = Conv2d(3, 5, 3, stride=stride, padding=padding, bias=True, rng=rng)
    conv.b.data[...] = rng.standard_normal(5)
    x = rng.standard_normal((2, 3, 7, 6)).astype(np.float32)
    y = conv(_t(x)).data
    expected = _conv_oracle(x.astype(np.float64), conv.W.data.astype(np.float64), stride, padding)
    np.testing.assert_allclose(y, expected + conv.b.data[None, :, None, None], rtol=1e-4, atol=1e-5)


def test_linear_forward(rng):
    fc = Linear(4, 3, rng=rng)
    x = rng.standard_normal((5, 4)).astype(np.float32)
    np.testing.assert_allclose(fc(_t(x)).data, x @ fc.W.data.T + fc.b.data, rtol=1e-5, atol=1e-6)


def test_batchnorm2d_train_updates_running_stats_and_eval_uses_them(rng):
    bn = BatchNorm2d(3, momentum=0.1)
    bn.gamma.data[...] = [1.0, 2.0, 0.5]
    bn.beta.data[...] = [0.0, -1.0, 3.0]
    x = (rng.standard_normal((4, 3, 5, 5)) * 2 + 1).astype(np.float32)
    y = bn(_t(x)).data
    mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
    expected = (x - mean[:, None, None]) / np.sqrt(var[:, None, None] + 1e-5)
    expected = expected * bn.gamma.data[:, None, None] + bn.beta.data[:, None, None]
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4)
    m = x.size // 3
    np.testing.assert_allclose(bn.running_mean, 0.1 * mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn.running_var, 0.9 + 0.1 * var * m / (m - 1), rtol=1e-5)

    def eval_oracle(z):
        rm, rv = bn.running_mean[:, None, None], bn.running_var[:, None, None]
        return (z - rm) / np.sqrt(rv + 1e-5) * bn.gamma.data[:, None, None] + bn.beta.data[:, None, None]

    z = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    stats = bn.running_mean.copy()
    bn.eval()
    np.testing.assert_allclose(bn(_t(z)).data, eval_oracle(z), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(bn.running_mean, stats)  # evaluation does not update them
    assert set(bn.state_dict()) == {"gamma", "beta", "running_mean", "running_var"}


def test_batchnorm_checks_shapes():
    with pytest.raises(ValueError, match=r"BatchNorm1d\(3\).*\(B, C\)"):
        BatchNorm1d(3)(_t(np.zeros((2, 3, 4, 4), np.float32)))
    with pytest.raises(ValueError, match=r"BatchNorm2d\(3\)"):
        BatchNorm2d(3)(_t(np.zeros((2, 4, 4, 4), np.float32)))
    y = BatchNorm1d(3)(_t(np.arange(6, dtype=np.float32).reshape(2, 3)))
    np.testing.assert_allclose(y.data, [[-1, -1, -1], [1, 1, 1]], atol=1e-3)


def test_dropout_train_eval_and_seeding(rng):
    x = _t(np.ones((200, 50), np.float32))
    d1, d2 = Dropout(0.2, rng=np.random.default_rng(3)), Dropout(0.2, rng=3)
    y1, y2 = d1(x).data, d2(x).data
    np.testing.assert_array_equal(y1, y2)  # same seed, same mask
    assert set(np.unique(y1)) == {0.0, np.float32(1 / 0.8)}  # inverted dropout scaling
    assert abs((y1 == 0).mean() - 0.2) < 0.02
    assert not np.array_equal(d1(x).data, y1)  # the next call draws a new mask
    d1.eval()
    assert d1(x) is x or np.array_equal(d1(x).data, x.data)
    with pytest.raises(ValueError, match="p must be"):
        Dropout(1.0)


def test_relu_pool_flatten(rng):
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    np.testing.assert_array_equal(ReLU()(_t(x)).data, np.maximum(x, 0))
    np.testing.assert_allclose(GlobalAvgPool()(_t(x)).data, x.mean(axis=(2, 3)), rtol=1e-6)
    np.testing.assert_array_equal(Flatten()(_t(x)).data, x.reshape(2, 60))


def test_parameters_live_on_the_default_backend(xp):
    layers = [Conv2d(2, 3, 3), Linear(2, 3), BatchNorm2d(3)]
    for layer in layers:
        assert all(gs.get_array_module(p) is xp for p in layer.parameters())
        assert all(gs.get_array_module(b) is xp for b in layer.buffers())
    x = gs.Tensor(xp.ones((2, 2, 4, 4), dtype=np.float32))
    assert gs.get_array_module(layers[0](x)) is xp


def test_layer_repr_shows_hyper_parameters():
    assert (
        repr(Conv2d(3, 16, 3, stride=2, padding=1))
        == "Conv2d(3, 16, kernel_size=(3, 3), stride=2, padding=1, bias=False)"
    )
    assert "p=0.2" in repr(Dropout(0.2))
