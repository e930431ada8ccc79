"""SGD (momentum, weight decay, exclusions, Nesterov) and the step LR schedule.

The expected values below are computed by hand from PyTorch's update rule
    g = grad + wd * p;  buf = mu * buf + g (buf = g at step 1);  p = p - lr * buf
and written as literals, so a wrong rule (e.g. decay applied after momentum,
buf initialised to 0, lr applied inside the buffer) gives different numbers.
"""

import numpy as np
import pytest

import gmsop_np as gs
from gmsop_np.optim import SGD, MultiStepLR, is_bn_or_bias
from gmsop_np.testing import device_sim


def _param(value, shape=(1,)):
    return gs.Parameter(np.full(shape, value, np.float32))


def _set_grad(p, value):
    p.grad = gs.Tensor(np.full(p.shape, value, np.float32))


def test_sgd_momentum_weight_decay_and_exclusion_by_hand():
    weight, bias = _param(1.0, (2, 2)), _param(1.0, (2,))
    opt = SGD([("conv.W", weight), ("bn.beta", bias)], lr=0.1, momentum=0.9, weight_decay=0.1, no_decay=is_bn_or_bias)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    expected_w, expected_b = [0.94, 0.8266], [0.95, 0.855]
    # step 1: W: g = 0.5 + 0.1*1 = 0.6, buf = 0.6, p = 1 - 0.06 = 0.94
    #         b: g = 0.5 (no decay),     buf = 0.5, p = 0.95
    # step 2: W: g = 0.5 + 0.094 = 0.594, buf = 0.54 + 0.594 = 1.134, p = 0.94 - 0.1134 = 0.8266
    #         b: g = 0.5, buf = 0.45 + 0.5 = 0.95, p = 0.95 - 0.095 = 0.855
    for ew, eb in zip(expected_w, expected_b):
        _set_grad(weight, 0.5)
        _set_grad(bias, 0.5)
        opt.step()
        np.testing.assert_allclose(weight.data, ew, rtol=1e-6)
        np.testing.assert_allclose(bias.data, eb, rtol=1e-6)
    assert weight.dtype == np.float32


def test_sgd_nesterov_by_hand():
    p = _param(1.0)
    opt = SGD([p], lr=0.1, momentum=0.9, nesterov=True)
    # step 1: buf = 0.5, d = 0.5 + 0.9*0.5 = 0.95, p = 0.905
    # step 2: buf = 0.45 + 0.5 = 0.95, d = 0.5 + 0.855 = 1.355, p = 0.905 - 0.1355 = 0.7695
    for expected in (0.905, 0.7695):
        _set_grad(p, 0.5)
        opt.step()
        np.testing.assert_allclose(p.data, expected, rtol=1e-6)


def test_sgd_plain_without_momentum():
    p = _param(2.0, (3,))
    opt = SGD([p], lr=0.5, momentum=0.0, weight_decay=0.5)
    _set_grad(p, 1.0)
    opt.step()  # p = 2 - 0.5 * (1 + 0.5*2) = 1
    np.testing.assert_allclose(p.data, 1.0)
    assert opt.state == {}


def test_sgd_skips_parameters_without_grad_and_does_not_touch_grads():
    a, b = _param(1.0, (2,)), _param(1.0, (2,))
    opt = SGD([a, b], lr=0.1, momentum=0.9)
    _set_grad(a, 0.5)
    grad_before = a.grad.data.copy()
    opt.step()
    np.testing.assert_array_equal(b.data, 1.0)
    np.testing.assert_array_equal(a.grad.data, grad_before)
    a.grad.data[...] = 100.0  # the momentum buffer must not alias the gradient
    np.testing.assert_allclose(opt.state[id(a)], 0.5)


def test_sgd_explicit_groups_and_lr_property():
    a, b = _param(1.0), _param(1.0)
    opt = SGD([{"params": [a]}, {"params": [b], "lr": 1.0}], lr=0.1, momentum=0.0)
    _set_grad(a, 1.0)
    _set_grad(b, 1.0)
    opt.step()
    np.testing.assert_allclose([a.item(), b.item()], [0.9, 0.0])
    opt.lr = 0.01
    assert [g["lr"] for g in opt.param_groups] == [0.01, 0.01]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(params=[], lr=0.1), "empty"),
        (dict(lr=-1.0), "learning rate"),
        (dict(lr=0.1, momentum=1.5), "momentum"),
        (dict(lr=0.1, weight_decay=-1.0), "weight_decay"),
        (dict(lr=0.1, momentum=0.0, nesterov=True), "nesterov"),
    ],
)
def test_sgd_validates_arguments(kwargs, message):
    kwargs.setdefault("params", [_param(1.0)])
    with pytest.raises(ValueError, match=message):
        SGD(**kwargs)


def test_sgd_rejects_duplicates_and_non_parameters():
    p = _param(1.0)
    with pytest.raises(ValueError, match="twice"):
        SGD([p, p], lr=0.1)
    with pytest.raises(TypeError, match="parameters"):
        SGD([np.zeros(2)], lr=0.1)


def test_sgd_state_dict_round_trip_gives_the_same_next_step(rng):
    def make():
        return [gs.Parameter(np.arange(4, dtype=np.float32).reshape(2, 2)), _param(1.0, (2,))]

    grads = [rng.standard_normal((2, 2)).astype(np.float32), rng.standard_normal(2).astype(np.float32)]
    ps = make()
    opt = SGD(ps, lr=0.1, momentum=0.9, weight_decay=1e-2)
    for _ in range(2):
        for p, g in zip(ps, grads):
            p.grad = gs.Tensor(g)
        opt.step()
    state = opt.state_dict()
    qs = [gs.Parameter(p.data.copy()) for p in ps]
    opt2 = SGD(qs, lr=0.5, momentum=0.5)  # different hyper-parameters: restored from state
    opt2.load_state_dict(state)
    for params, o in ((ps, opt), (qs, opt2)):
        for p, g in zip(params, grads):
            p.grad = gs.Tensor(g * 3)
        o.step()
    for p, q in zip(ps, qs):
        np.testing.assert_array_equal(p.data, q.data)
    with pytest.raises(ValueError, match="groups of sizes"):
        SGD([_param(1.0)], lr=0.1).load_state_dict(state)


def test_multistep_lr_paper_schedule():
    opt = SGD([_param(1.0)], lr=1.0)
    sched = MultiStepLR(opt, epochs_per_stage=[40, 10, 5, 5], base_lr=0.1, gamma=0.1)
    assert sched.total_epochs == 60
    seen = []
    for _ in range(62):
        seen.append(opt.lr)
        sched.step()
    expected = [0.1] * 40 + [0.01] * 10 + [0.001] * 5 + [1e-4] * 5 + [1e-4] * 2  # last rate is kept
    assert seen == pytest.approx(expected, rel=1e-12)


def test_multistep_lr_base_from_optimizer_and_state_dict():
    a, b = _param(1.0), _param(1.0)
    opt = SGD([{"params": [a], "lr": 0.075}, {"params": [b], "lr": 0.15}], lr=0.1)
    sched = MultiStepLR(opt, epochs_per_stage=[50, 15, 10], base_lr=None)
    for _ in range(50):
        sched.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.0075, 0.015])
    opt2 = SGD([{"params": [a], "lr": 9.0}, {"params": [b], "lr": 9.0}], lr=0.1)
    sched2 = MultiStepLR(opt2, epochs_per_stage=[1], base_lr=None)
    sched2.load_state_dict(sched.state_dict())
    assert sched2.epoch == 50
    assert [g["lr"] for g in opt2.param_groups] == pytest.approx([0.0075, 0.015])
    with pytest.raises(ValueError, match="each entry of epochs_per_stage must be >= 1, got 0"):
        MultiStepLR(opt, epochs_per_stage=[0, 5])


# ----- the flat storage ---------------------------------------------------------------------------
def test_sgd_updates_a_group_in_a_few_array_operations_whatever_the_number_of_parameters(xp):
    """All parameters of a group in one flat array: a step costs the same ~7 operations for 2 or 40
    parameters (on a GPU each is a kernel launch), and gives PyTorch's values (by hand above)."""
    for count in (2, 40):
        ps = [gs.Parameter(xp.full((3, 2), 1.0, dtype=np.float32)) for _ in range(count)]
        opt = SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.1)
        for _ in range(2):
            for p in ps:
                p.grad = gs.Tensor(xp.full((3, 2), 0.5, dtype=np.float32))
            if xp is device_sim:
                with device_sim.counting() as counts:
                    opt.step()
                assert counts.launches <= 7 and counts.syncs == counts.copies_to_device == 0, counts.summary()
            else:
                opt.step()
        for p in ps:  # W of test_sgd_momentum_weight_decay_and_exclusion_by_hand: 0.94, then 0.8266
            np.testing.assert_allclose(gs.to_cpu(p.data), 0.8266, rtol=1e-6)
            assert p.data.dtype == np.float32 and p.data.shape == (3, 2)


def test_sgd_follows_parameters_given_new_arrays_and_keeps_their_momentum():
    """module.to_gpu() / astype() / p.data = ... replace a parameter's array: the next step rebuilds the flat
    storage from the current values and carries each momentum buffer over."""
    a, b = _param(1.0, (2,)), _param(1.0, (3,))
    opt = SGD([a, b], lr=0.1, momentum=0.9)
    for p in (a, b):
        _set_grad(p, 0.5)
    opt.step()  # a: buf 0.5, p 0.95
    a.data = np.full(2, 2.0, np.float32)  # replaced from outside
    for p in (a, b):
        _set_grad(p, 0.5)
    opt.step()  # buf 0.45 + 0.5 = 0.95: a = 2 - 0.095, b = 0.95 - 0.095
    np.testing.assert_allclose(a.data, 1.905, rtol=1e-6)
    np.testing.assert_allclose(b.data, 0.855, rtol=1e-6)
    a.data[...] = 0.0  # an in-place write reaches the optimizer's storage
    _set_grad(a, 0.0)
    b.grad = None
    opt.step()  # a's gradient only: buf 0.855, a = 0 - 0.0855; b untouched
    np.testing.assert_allclose(a.data, -0.0855, rtol=1e-5)
    np.testing.assert_allclose(b.data, 0.855, rtol=1e-6)
    with pytest.raises(TypeError, match="share dtype and backend"):
        SGD([_param(1.0), gs.Parameter(np.ones(1))], lr=0.1)
