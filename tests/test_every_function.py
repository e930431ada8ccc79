"""Every Function on every backend: forward and backward parity with NumPy, and a gradient check there.

``CASES`` holds one small float64 problem per group of Functions. Each runs through the ``xp``
fixture (NumPy, the CPU stand-in for CuPy, real CuPy on a GPU): its outputs and the gradients
of every floating input for a random upstream gradient must equal the NumPy run's, and
``gs.check_backward`` (directional, float64) must pass *with the inputs on that backend*.
While a case runs, the Function classes it calls are recorded, so a case cannot claim a class
it does not exercise; ``test_every_function_class_has_a_case`` fails when a Function is added
to ``gmsop_np/functions/`` without one.

Inputs are kept away from kinks (ReLU and |x| at 0, ties of max and Top-K, clip bounds) so
that finite differences see a smooth function.
"""

import dataclasses
import importlib
import inspect
import pkgutil

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

import gmsop_np as gs
import gmsop_np.functional as F
import gmsop_np.functions
from gmsop_np.core import ArrayFunction, Function
from gmsop_np.models import tiny
from gmsop_np.optim import SGD
from gmsop_np.random import CounterRNG

from strategies import covariance_of_features


@pytest.fixture(autouse=True)
def one_blas_thread():
    """Small problems: one BLAS thread is faster, and much faster on a busy machine (d = 128 eigh)."""
    with threadpool_limits(1):
        yield


def function_classes():
    """Every Function subclass defined in a module of gmsop_np/functions/."""
    found = set()
    for info in pkgutil.iter_modules(gmsop_np.functions.__path__):
        module = importlib.import_module(f"gmsop_np.functions.{info.name}")
        for cls in vars(module).values():
            if (
                inspect.isclass(cls)
                and issubclass(cls, Function)
                and cls not in (Function, ArrayFunction)
                and cls.__module__ == module.__name__
            ):
                found.add(cls.__name__)
    return found


@dataclasses.dataclass
class Case:
    """``fn(*tensors)`` on ``inputs`` (host arrays; floating ones get gradients unless listed in ``constant``)."""

    fn: object
    inputs: tuple
    covers: frozenset
    constant: tuple = ()


_rng = np.random.default_rng(2018)


def _normal(*shape):
    return _rng.standard_normal(shape)


def _away_from_zero(*shape):
    return np.where(_rng.random(shape) < 0.5, -1.0, 1.0) * _rng.uniform(0.2, 1.5, shape)


def _distinct(*shape):
    """Values at least 0.05 apart (no ties for max / Top-K)."""
    n = int(np.prod(shape))
    return _rng.permutation(np.linspace(-2.0, 2.0, n) + _rng.uniform(0, 0.01, n)).reshape(shape)


def _spd(batch, d):
    return covariance_of_features(_rng.standard_normal((batch, d, 3 * d)))


def _linear_components(weights):
    return [lambda t, i=i: F.matmul(t, weights[i]) for i in range(weights.shape[0])]


def _routed_bank(weights):
    n, c_in, c_out = weights.shape

    def bank(rows, route):
        per_row = F.reshape(F.matmul(gs.Tensor(route), F.reshape(weights, (n, c_in * c_out))), (-1, c_in, c_out))
        return F.reshape(F.matmul(F.reshape(rows, (rows.shape[0], 1, c_in)), per_row), (rows.shape[0], c_out))

    return bank


_INDICES = np.array([[0, 2], [2, 1], [1, 0], [2, 0]])  # (B=4, K=2) of N=3: every component used
_WEIGHTS = np.zeros((4, 3))
_WEIGHTS[np.arange(4)[:, None], _INDICES] = [[0.7, 0.3], [0.6, 0.4], [0.55, 0.45], [0.8, 0.2]]


def _batch_norm_eval(x, gamma, beta, mean, var):
    return F.batch_norm(x, gamma, beta, mean, var, training=False)


def _gate(u, w_g, w_n, noise):
    weights, _ = F.topk_softmax(F.noisy_gate_logits(u, w_g, w_n, noise=noise), 2)
    return weights, F.balance_loss(weights)


CASES = {
    "arithmetic": Case(
        lambda a, b: (a + b) * a - b / (b * b + 1.0) + (-a) ** 2,
        (_normal(2, 3), _normal(1, 3)),
        frozenset({"Add", "Sub", "Mul", "Div", "Neg", "Pow"}),
    ),
    "elementwise": Case(
        lambda a, p: F.exp(a) + F.log(p) * F.sqrt(p) + F.abs(a),
        (_away_from_zero(3, 4), _rng.uniform(0.5, 2.0, (3, 4))),
        frozenset({"Exp", "Log", "Sqrt", "Abs"}),
    ),
    "matmul": Case(F.matmul, (_normal(2, 3, 4), _normal(4, 5)), frozenset({"MatMul"})),
    "reductions": Case(
        lambda a: (F.sum(a, axis=1), F.mean(a, axis=(0, 2)), F.max(a, axis=2)),
        (_distinct(2, 3, 4),),
        frozenset({"Sum", "Max"}),
    ),
    "shapes": Case(
        lambda a, b: (F.reshape(F.transpose(a, (2, 0, 1)), (4, 6)) + F.broadcast_to(b, (4, 6)), F.sum_to(a, (1, 3, 1))),
        (_normal(2, 3, 4), _normal(1, 6)),
        frozenset({"Reshape", "Transpose", "BroadcastTo", "SumTo"}),
    ),
    "indexing": Case(
        lambda a: (a[1:, np.array([0, 2, 0])], F.getitem(a, (np.array([0, 2]), np.array([1, 3])), unique=True)),
        (_normal(3, 4),),
        frozenset({"GetItem", "GetItemGrad"}),
    ),
    "joining": Case(
        lambda a, b: (F.concatenate([a, b], axis=1), F.stack([a, a * 2.0], axis=0)),
        (_normal(2, 3), _normal(2, 2)),
        frozenset({"Concatenate"}),
    ),
    "selection": Case(
        lambda a, b, cond: F.where(cond, a, b) + F.clip(a, -0.5, 0.5),
        (_rng.choice([-1.0, -0.25, 0.1, 0.3, 1.0], (2, 3)), _normal(2, 3), np.array([[True, False, True]])),
        frozenset({"Where", "Clip"}),
    ),
    "activations": Case(
        lambda a: (F.relu(a), F.sigmoid(a), F.softplus(a), F.softmax(a, axis=0), F.log_softmax(a, axis=1)),
        (_away_from_zero(3, 4),),
        frozenset({"ReLU", "Sigmoid", "Softplus", "Softmax", "LogSoftmax"}),
    ),
    "dropout": Case(
        lambda a: F.dropout(a, 0.3, rng=CounterRNG(3)),  # the same mask on every backend (gmsop_np/random.py)
        (_normal(5, 6),),
        frozenset({"Dropout"}),
    ),
    "conv": Case(
        lambda x, w, b, w1: (F.conv2d(x, w, b, stride=2, padding=1), F.conv2d(x, w1, stride=2)),
        (_normal(2, 2, 5, 5), _normal(3, 2, 3, 3), _normal(3), _normal(4, 2, 1, 1)),
        frozenset({"Conv2d", "Conv2d1x1"}),
    ),
    "linear": Case(F.linear, (_normal(4, 3), _normal(2, 3), _normal(2)), frozenset({"Linear"})),
    "batch_norm_train": Case(
        lambda x, g, b: F.batch_norm(x, g, b, training=True),
        (_normal(3, 2, 2, 2), _rng.uniform(0.5, 1.5, 2), _normal(2)),
        frozenset({"BatchNormTrain"}),
    ),
    "batch_norm_eval": Case(
        _batch_norm_eval,
        (_normal(3, 4), _rng.uniform(0.5, 1.5, 4), _normal(4), _normal(4), _rng.uniform(0.5, 2.0, 4)),
        frozenset({"BatchNormEval"}),
        constant=(3, 4),
    ),
    "pooling": Case(
        lambda x: (F.avg_pool2d(x, 3, stride=2, padding=1), F.global_avg_pool(x)),
        (_normal(2, 3, 5, 5),),
        frozenset({"AvgPool2d", "GlobalAvgPool"}),
    ),
    "cross_entropy": Case(
        lambda z, t: F.softmax_cross_entropy(z, t),
        (_normal(4, 5), np.array([1, 0, 4, 1])),
        frozenset({"SoftmaxCrossEntropy"}),
    ),
    "covariance_and_triu": Case(
        lambda x: F.triu_vec(F.cov_pool(x)), (_normal(2, 3, 3, 4),), frozenset({"CovPool", "GetItem", "GetItemGrad"})
    ),
    "newton_schulz": Case(lambda a: F.sqrtm_newton_schulz(a, 3), (_spd(2, 4),), frozenset({"NewtonSchulzSqrt"})),
    "eig_sqrt": Case(F.sqrtm_eig, (_spd(2, 4),), frozenset({"EigSqrt"})),
    "eig_sqrt_d128": Case(F.sqrtm_eig, (_spd(2, 128),), frozenset({"EigSqrt"})),  # SR-SOP's d: eigh per matrix on a GPU
    "gating": Case(
        _gate,
        (_normal(4, 3), _normal(5, 3), _normal(5, 3) * 0.1, _normal(4, 1)),
        frozenset({"TopKSoftmax", "BalanceLoss", "Softplus", "MatMul"}),
        constant=(3,),
    ),
    "sparse_mixture": Case(
        lambda x, w, W, idx: F.sparse_mixture(x, w, idx, _linear_components(W), tail=F.exp)[0],
        (_normal(4, 3) * 0.5, _WEIGHTS, _normal(3, 3, 2) * 0.5, _INDICES),
        frozenset({"PermuteRows", "SplitRows"}),
    ),
    "routed_mixture": Case(
        lambda x, w, W, idx: F.routed_mixture(x, w, idx, _routed_bank(W), tail=F.exp)[0],
        (_normal(4, 3) * 0.5, _WEIGHTS, _normal(3, 3, 2) * 0.5, _INDICES),
        frozenset({"MatMul", "GetItem", "GetItemGrad"}),
    ),
}


def test_every_function_class_has_a_case():
    covered = frozenset().union(*(case.covers for case in CASES.values()))
    missing = function_classes() - covered
    assert not missing, f"Function classes without a backend parity case in tests/test_every_function.py: {missing}"
    assert covered <= function_classes(), f"cases claim unknown classes: {covered - function_classes()}"


def _run(case, xp, record):
    """Outputs and input gradients (NumPy arrays; None where no gradient) of ``case`` on backend ``xp``."""
    tensors = []
    for i, a in enumerate(case.inputs):
        differentiable = a.dtype.kind == "f" and i not in case.constant
        tensors.append(gs.Tensor(xp.asarray(a), requires_grad=differentiable))
    with record():
        outputs = case.fn(*tensors)
        outputs = outputs if isinstance(outputs, tuple) else (outputs,)
        cotangents = [np.random.default_rng(i).standard_normal(y.shape) for i, y in enumerate(outputs)]
        gs.backward(list(outputs), [xp.asarray(u) for u in cotangents])
    grads = [None if t.grad is None else gs.to_cpu(t.grad.data) for t in tensors]
    return [gs.to_cpu(y.data) for y in outputs], grads


@pytest.fixture
def recorder(monkeypatch):
    """``with record(): ...`` notes the class of every Function called inside the block."""
    called, active = set(), []
    original = Function.__call__

    def recording_call(self, *inputs):
        if active:
            called.add(type(self).__name__)
        return original(self, *inputs)

    monkeypatch.setattr(Function, "__call__", recording_call)

    class Record:
        def __enter__(self):
            active.append(True)

        def __exit__(self, *exc):
            active.pop()

    return Record, called


@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_and_backward_equal_numpys(name, xp, recorder):
    case = CASES[name]
    record, called = recorder
    with gs.using_backend("numpy"):
        expected_outputs, expected_grads = _run(case, np, record)
    called.clear()
    outputs, grads = _run(case, xp, record)
    assert case.covers <= called, f"case {name!r} does not call {sorted(case.covers - called)}"
    for e, g in zip(expected_outputs, outputs):
        np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-12, err_msg=f"{name}: output")
    for i, (e, g) in enumerate(zip(expected_grads, grads)):
        assert (e is None) == (g is None), f"{name}: input {i} has a gradient on one backend only"
        if e is not None:
            np.testing.assert_allclose(g, e, rtol=1e-9, atol=1e-11, err_msg=f"{name}: gradient of input {i}")


@pytest.mark.parametrize("name", sorted(CASES))
def test_check_backward_with_inputs_on_the_backend(name, xp):
    case = CASES[name]
    inputs = [xp.asarray(a) for a in case.inputs]
    checked = [i for i, a in enumerate(inputs) if i not in case.constant]  # constants stay out of the check

    def fn(*tensors):
        given = dict(zip(checked, tensors))
        return case.fn(*[given.get(i, gs.Tensor(a)) for i, a in enumerate(inputs)])

    grads = gs.check_backward(fn, [inputs[i] for i in checked], mode="directional", num_directions=2)
    assert grads and all(isinstance(g, np.ndarray) for g in grads)


# ----- a whole network: forward, objective, backward and SGD steps ------------------------------------
def _train_steps(xp, head, steps=2):
    """Two training steps of a float64 tiny ResNet (dropout and gating noise on: drawn by CounterRNGs, so
    the same on every backend); returns the logits, losses and the parameters and gradients after them."""
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((6, 3, 16, 16)), rng.integers(0, 4, 6)
    model = tiny(head, num_classes=4, input_size=16, preset="official", seed=3, **({"k": 2} if head == "gmsop" else {}))
    model.astype(np.float64).train()
    assert all(isinstance(p.data, xp.ndarray) for p in model.parameters()), "built on the backend under test"
    optimizer = SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    losses = []
    for _ in range(steps):
        logits = model(gs.Tensor(xp.asarray(x)))
        loss = F.objective(logits, xp.asarray(y), model.balance_loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.item()))
    state = {name: gs.to_cpu(p.data) for name, p in model.named_parameters()}
    grads = {name: gs.to_cpu(p.grad.data) for name, p in model.named_parameters()}
    return gs.to_cpu(logits.data), losses, state, grads


@pytest.mark.parametrize("head", ["gap", "gmsop"])
def test_training_steps_of_a_whole_network_equal_numpys(head, xp):
    with gs.using_backend("numpy"):
        expected = _train_steps(np, head)
    got = _train_steps(xp, head)  # the xp fixture made xp's backend the default: the model is built there
    np.testing.assert_allclose(got[0], expected[0], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(got[1], expected[1], rtol=1e-10)
    for name in expected[2]:
        np.testing.assert_allclose(got[2][name], expected[2][name], rtol=1e-9, atol=1e-12, err_msg=name)
        np.testing.assert_allclose(got[3][name], expected[3][name], rtol=1e-7, atol=1e-10, err_msg=name)
