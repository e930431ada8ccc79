"""The library's bad-input standard, across the public API: the right exception class and a
message that names the argument (or shape, or file) -- never a bare NumPy error or a silent result.

Each case is (what is called, the exception, a fragment of the message).
"""

import numpy as np
import pytest

import gmsop_np as gs
import gmsop_np.functional as F
from gmsop_np import checkpoint, models, nn, optim
from gmsop_np.data import ArrayDataset, DataLoader, get_dataset

T = gs.Tensor


def _params():
    return models.tiny(num_classes=2, input_size=16).parameters()


CASES = {
    # tensors and the engine
    "Tensor(None)": (lambda: T(None), TypeError, "Tensor data must be"),
    "Tensor of strings": (lambda: T(["a"]), TypeError, "numeric"),
    "ragged list": (lambda: T([[1, 2], [3]]), TypeError, "numeric"),
    "complex data": (lambda: T(np.array([1j])), TypeError, "complex128"),
    "integer tensor requiring grad": (
        lambda: T(np.arange(3), requires_grad=True),
        TypeError,
        "only floating-point tensors can require gradients",
    ),
    "backward of a vector without grad=": (
        lambda: (T(np.ones(3), requires_grad=True) * 2).backward(),
        RuntimeError,
        "one-element output",
    ),
    "backward with a gradient of the wrong shape": (
        lambda: (T(np.ones(3), requires_grad=True) * 2).backward(np.ones(4)),
        ValueError,
        r"gradient of shape \(4,\) given for an output of shape \(3,\)",
    ),
    # core functions
    "matmul inner dimensions": (
        lambda: T(np.ones((2, 3))) @ T(np.ones((2, 3))),
        ValueError,
        "inner dimensions differ",
    ),
    "broadcasting": (lambda: T(np.ones((2, 3))) + T(np.ones((3, 2))), ValueError, r"Add \(inputs of shape"),
    "sum over a missing axis": (lambda: F.sum(T(np.ones(6)), axis=3), ValueError, "axis must be between -1 and 0"),
    "stack of nothing": (lambda: F.stack([]), ValueError, "at least one"),
    "index out of range": (lambda: T(np.ones(3))[7], IndexError, r"GetItem .* index 7"),
    "softmax axis": (lambda: F.softmax(T(np.ones((2, 3))), axis=5), ValueError, "axis 5"),
    # losses
    "float labels": (
        lambda: F.softmax_cross_entropy(T(np.ones((2, 3))), np.array([0.0, 1.0])),
        TypeError,
        "labels must be integers",
    ),
    "label out of range": (
        lambda: F.softmax_cross_entropy(T(np.ones((2, 3))), [0, 3]),
        ValueError,
        "label 3 is out of range",
    ),
    "negative label": (lambda: F.softmax_cross_entropy(T(np.ones((2, 3))), [0, -1]), ValueError, "label -1"),
    "top-k of a float k": (lambda: F.topk_error(T(np.ones((2, 3))), [0, 1], 1.0), TypeError, "k must be an integer"),
    # second-order pooling and gating
    "covariance of a 3-d array": (lambda: F.cov_pool(T(np.ones((2, 3, 4)))), ValueError, r"\(B, C, H, W\)"),
    "covariance of integers": (lambda: F.cov_pool(T(np.ones((2, 3, 4, 4), dtype=int))), TypeError, "floating"),
    "zero Newton-Schulz steps": (
        lambda: F.sqrtm_newton_schulz(T(np.eye(3)[None]), 0),
        ValueError,
        "num_iters must be >= 1",
    ),
    "negative trace eps": (lambda: F.sqrtm_newton_schulz(T(np.eye(3)[None]), 3, eps=-1), ValueError, "eps"),
    "non-square matrices": (lambda: F.triu_vec(T(np.ones((1, 2, 3)))), ValueError, r"\(B, d, d\)"),
    "Top-1 gating": (lambda: F.topk_softmax(T(np.ones((2, 3))), 1), ValueError, "identically 1"),
    "negative balance weight": (lambda: F.balance_loss(T(np.ones((2, 3)) / 3), alpha=-1), ValueError, "alpha"),
    "gate weights of the wrong width": (
        lambda: F.noisy_gate_logits(T(np.ones((2, 3))), T(np.ones((4, 5)))),
        ValueError,
        r"W_g must be \(N, D\) with D = 3",
    ),
    # layers, models, optimizer
    "a float channel count": (lambda: nn.Conv2d(3.0, 3, 3), TypeError, "in_channels must be an integer"),
    "zero channels": (lambda: nn.Conv2d(0, 3, 3), ValueError, "in_channels must be >= 1"),
    "dropout of everything": (lambda: nn.Dropout(1.0), ValueError, "below 1"),
    "a function in Sequential": (lambda: nn.Sequential(lambda x: x), TypeError, "not a Module"),
    "unknown head": (lambda: models.resnet18(head="foo"), ValueError, "unknown head 'foo'"),
    "head option it does not take": (
        lambda: models.resnet18(head="gap", k=4),
        TypeError,
        "head 'gap' does not take the option",
    ),
    "K larger than N": (lambda: models.tiny(head="gmsop", k=17), ValueError, r"k \(components per sample"),
    "negative alpha": (lambda: models.tiny(head="gmsop", alpha=-5), ValueError, "alpha"),
    "input size not a multiple of 8": (lambda: models.resnet18(input_size=60), ValueError, "multiple of 8"),
    "images of another size": (
        lambda: models.tiny(input_size=16)(T(np.ones((1, 3, 32, 32), np.float32))),
        ValueError,
        "input_size=32",
    ),
    "negative learning rate": (lambda: optim.SGD(_params(), lr=-1), ValueError, "learning rate lr"),
    "learning rate as text": (lambda: optim.SGD(_params(), lr="0.1"), TypeError, "must be a number"),
    "arrays instead of parameters": (lambda: optim.SGD([np.ones(3)], lr=0.1), TypeError, "model.parameters()"),
    "an integer dtype for a model": (lambda: models.tiny().astype(np.int32), TypeError, "floating-point dtype"),
    # files and data
    "missing checkpoint": (
        lambda: checkpoint.load_checkpoint("/nonexistent/ck.npz", models.tiny()),
        FileNotFoundError,
        "/nonexistent/ck.npz",
    ),
    "unknown dataset": (lambda: get_dataset("foo"), ValueError, "unknown dataset 'foo'"),
    "unknown split": (lambda: get_dataset("textures", "test"), ValueError, "'test'"),
    "empty batch": (lambda: DataLoader(get_dataset("textures", n=8), 0), ValueError, "batch_size"),
    "labels beyond the classes": (lambda: ArrayDataset(np.zeros((2, 3, 4, 4)), [0, 5], 3), ValueError, "0..2"),
    "float32 gradient check": (lambda: gs.check_backward(F.exp, [np.ones(3, np.float32)]), TypeError, "float64"),
    "unknown backend": (lambda: gs.using_backend("torch").__enter__(), ValueError, "unknown backend 'torch'"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_gets_the_right_exception_and_a_message_naming_it(name):
    call, error, fragment = CASES[name]
    with pytest.raises(error, match=fragment):
        call()


def test_a_corrupt_checkpoint_names_the_file(tmp_path):
    path = tmp_path / "broken.npz"
    path.write_text("not an archive")
    with pytest.raises(checkpoint.CheckpointError, match=str(path)):
        checkpoint.load_checkpoint(path, models.tiny())
