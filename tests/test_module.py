"""Module: registration, state dicts (round trip, strict errors), train/eval, devices."""

import numpy as np
import pytest

import gmsop_np as gs
from gmsop_np.nn.module import LoadResult, Module, ModuleList, Sequential


class Affine(Module):
    """y = x * scale + shift, with a running counter as a buffer."""

    def __init__(self, n, rng):
        super().__init__()
        self.scale = gs.Parameter(rng.standard_normal(n).astype(np.float32))
        self.shift = gs.Parameter(np.zeros(n, np.float32))
        self.register_buffer("seen", np.zeros(n, np.float32))
        self.note = "plain attribute"

    def forward(self, x):
        return x * self.scale + self.shift


class Net(Module):
    def __init__(self, rng):
        super().__init__()
        self.a = Affine(3, rng)
        self.blocks = Sequential(Affine(3, rng), Affine(3, rng))
        self.extra = ModuleList([Affine(2, rng)])
        self.w = gs.Parameter(np.ones((2, 3), np.float32))

    def forward(self, x):
        return self.blocks(self.a(x))


def test_registration_names_and_order(rng):
    net = Net(rng)
    names = [n for n, _ in net.named_parameters()]
    assert names == [
        "w",
        "a.scale",
        "a.shift",
        "blocks.0.scale",
        "blocks.0.shift",
        "blocks.1.scale",
        "blocks.1.shift",
        "extra.0.scale",
        "extra.0.shift",
    ]
    assert [n for n, _ in net.named_buffers()] == ["a.seen", "blocks.0.seen", "blocks.1.seen", "extra.0.seen"]
    assert net.num_parameters() == 6 + 3 * 2 * 3 + 2 * 2
    assert net.a.note == "plain attribute" and "note" not in net.a._parameters
    assert len(net.modules()) == 1 + 1 + 1 + 2 + 1 + 1


def test_reassigning_and_shared_parameters(rng):
    net = Net(rng)
    new = gs.Parameter(np.zeros((2, 3), np.float32))
    net.w = new
    assert net.w is new and sum(p is new for p in net.parameters()) == 1
    net.blocks[1].scale = net.a.scale  # tie two layers: counted once
    assert sum(p is net.a.scale for p in net.parameters()) == 1
    net.w = None  # no longer a parameter
    assert "w" not in dict(net.named_parameters())


def test_setattr_before_init_is_a_clear_error():
    class Bad(Module):
        def __init__(self):
            self.w = gs.Parameter(np.ones(2, np.float32))

    with pytest.raises(AttributeError, match="super\\(\\).__init__"):
        Bad()


def test_register_buffer_validates(rng):
    m = Affine(2, rng)
    with pytest.raises(TypeError, match="array"):
        m.register_buffer("x", [1, 2])
    with pytest.raises(KeyError, match="already"):
        m.register_buffer("scale", np.zeros(2))
    with pytest.raises(TypeError, match="buffer 'seen'"):
        m.seen = "not an array"


def test_state_dict_is_a_host_copy(rng):
    net = Net(rng)
    sd = net.state_dict()
    assert all(isinstance(v, np.ndarray) for v in sd.values())
    assert list(sd) == [n for n, _ in net.named_parameters()] + [n for n, _ in net.named_buffers()]
    before = sd["a.scale"].copy()
    net.a.scale.data += 1.0  # training on must not change the saved copy
    np.testing.assert_array_equal(sd["a.scale"], before)


def test_state_dict_round_trip_in_place(rng):
    src, dst = Net(np.random.default_rng(1)), Net(np.random.default_rng(2))
    src.a.seen[...] = 7.0
    target_array = dst.a.scale.data
    result = dst.load_state_dict(src.state_dict())
    assert result == LoadResult([], [])
    for (name, a), (_, b) in zip(src.state_dict().items(), dst.state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=name)
    assert dst.a.scale.data is target_array  # written in place, same array object
    x = gs.Tensor(rng.standard_normal(3).astype(np.float32))
    np.testing.assert_array_equal(src(x).data, dst(x).data)


def test_load_state_dict_strict_errors_name_the_keys(rng):
    net = Net(rng)
    sd = net.state_dict()
    missing = dict(sd)
    del missing["blocks.1.shift"]
    with pytest.raises(KeyError, match="blocks.1.shift"):
        net.load_state_dict(missing)
    unexpected = dict(sd, bogus=np.zeros(1))
    with pytest.raises(KeyError, match="bogus"):
        net.load_state_dict(unexpected)
    wrong = dict(sd, **{"a.scale": np.zeros(4, np.float32)})
    with pytest.raises(ValueError, match=r"a\.scale.*\(4,\).*\(3,\)"):
        net.load_state_dict(wrong)
    with pytest.raises(ValueError, match="a.scale"):  # shape is checked even when not strict
        net.load_state_dict(wrong, strict=False)


def test_load_state_dict_non_strict_loads_the_rest(rng):
    net = Net(np.random.default_rng(5))
    sd = Net(np.random.default_rng(6)).state_dict()
    del sd["w"]
    sd["bogus"] = np.zeros(1)
    result = net.load_state_dict(sd, strict=False)
    assert result.missing_keys == ["w"] and result.unexpected_keys == ["bogus"]
    np.testing.assert_array_equal(net.a.scale.data, sd["a.scale"])


def test_train_eval_is_recursive(rng):
    net = Net(rng)
    assert all(m.training for m in net.modules())
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())
    net.blocks.eval()
    assert net.training and not net.blocks[0].training


def test_zero_grad_and_call(rng):
    net = Net(rng)
    x = gs.Tensor(rng.standard_normal(3).astype(np.float32))
    net(x).sum().backward()
    assert net.a.scale.grad is not None
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_to_cpu_keeps_parameter_objects(rng):
    net = Net(rng)
    params = net.parameters()
    net.to_cpu()
    assert all(a is b for a, b in zip(params, net.parameters()))


def test_to_gpu_moves_parameters_and_buffers_in_place(xp, rng):
    net = Net(rng)  # host arrays (Affine builds them with NumPy)
    params = net.parameters()
    sd = net.state_dict()
    if xp is np:
        net.to_cpu()
    else:
        net.to_gpu()
    assert all(a is b for a, b in zip(params, net.parameters()))
    assert all(gs.get_array_module(p) is xp for p in net.parameters())
    assert all(gs.get_array_module(b) is xp for b in net.buffers())
    sd_after = net.state_dict()  # always NumPy, whatever the device
    assert all(isinstance(v, np.ndarray) for v in sd_after.values())
    for k in sd:
        np.testing.assert_array_equal(sd[k], sd_after[k])
    net.to_cpu()
    assert all(isinstance(p.data, np.ndarray) for p in net.parameters())


def test_sequential_and_module_list():
    class Double(Module):
        def forward(self, x):
            return x * 2

    seq = Sequential(Double(), Double(), Double())
    assert len(seq) == 3 and isinstance(seq[0], Double)
    assert seq(gs.Tensor(np.float32(1.5))).item() == 12.0
    with pytest.raises(TypeError, match="not a Module"):
        Sequential(Double(), lambda x: x)
    ml = ModuleList([Double()]).append(Double())
    assert len(ml) == 2 and [type(m) for m in ml] == [Double, Double]
    with pytest.raises(TypeError):
        ml(gs.Tensor(1.0))
    assert "(0): Double()" in repr(seq)
