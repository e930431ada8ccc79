"""softmax_cross_entropy and topk_error: forward vs SciPy, gradient check and the
closed-form gradient, label validation, stability, backend parity.
Equations: derivations/04_softmax_cross_entropy.md, eqs. (13)-(14)."""

import pathlib

import numpy as np
import pytest
import scipy.special
from hypothesis import given
from hypothesis import strategies as st
from test_conv import cited_equations

import gmsop_np as gs
import gmsop_np.functional as F
from gmsop_np.functions import loss as loss_module

from strategies import arrays

ROOT = pathlib.Path(__file__).resolve().parents[1]


@st.composite
def logits_and_labels(draw):
    B, N = draw(st.integers(1, 5)), draw(st.integers(1, 6))
    logits = draw(arrays((B, N), -5.0, 5.0))
    labels = np.array(draw(st.lists(st.integers(0, N - 1), min_size=B, max_size=B)), dtype=np.int64)
    return logits, labels


@given(problem=logits_and_labels())
def test_cross_entropy_forward_eq13(problem):
    logits, labels = problem
    log_p = logits - scipy.special.logsumexp(logits, axis=1, keepdims=True)
    expected = -log_p[np.arange(len(labels)), labels].mean()
    np.testing.assert_allclose(F.softmax_cross_entropy(logits, labels).data, expected, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(
        F.softmax_cross_entropy(logits, labels, reduction="sum").data, expected * len(labels), rtol=1e-12, atol=1e-14
    )


@given(problem=logits_and_labels(), reduction=st.sampled_from(["mean", "sum"]))
def test_cross_entropy_backward_eq14(problem, reduction):
    logits, labels = problem
    gs.check_backward(lambda z, t: F.softmax_cross_entropy(z, t, reduction), [logits, labels])


def test_cross_entropy_gradient_closed_form_eq14(rng):
    logits, labels = rng.standard_normal((4, 3)), np.array([2, 0, 0, 1])
    z = gs.Tensor(logits, requires_grad=True)
    F.softmax_cross_entropy(z, labels).backward(np.array(2.5))
    expected = 2.5 * (scipy.special.softmax(logits, axis=1) - np.eye(3)[labels]) / 4
    np.testing.assert_allclose(z.grad.data, expected, rtol=1e-12)


def test_cross_entropy_is_stable_and_keeps_float32():
    z = gs.Tensor(np.array([[1000.0, -1000.0], [-1000.0, 1000.0]], dtype=np.float32), requires_grad=True)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        loss = F.softmax_cross_entropy(z, np.array([1, 1]))
        loss.backward()
    assert loss.dtype == z.grad.dtype == np.float32
    np.testing.assert_allclose(loss.item(), 1000.0, rtol=1e-6)  # (2000 + 0) / 2
    np.testing.assert_allclose(z.grad.data, [[0.5, -0.5], [0.0, 0.0]], atol=1e-6)


def test_cross_entropy_accepts_label_lists_and_tensors():
    logits = np.array([[0.0, 1.0], [2.0, 0.0]])
    a = F.softmax_cross_entropy(logits, [1, 0]).item()
    b = F.softmax_cross_entropy(logits, gs.Tensor(np.array([1, 0]))).item()
    assert a == b


@pytest.mark.parametrize(
    "labels, error, match",
    [
        (np.array([0, 3]), ValueError, r"label 3 is out of range \(must lie in 0..2\); there are 3 classes"),
        (np.array([-1, 0]), ValueError, "label -1 is out of range"),
        (np.array([0.0, 1.0]), TypeError, "integers"),
        (np.array([0, 1, 2]), ValueError, r"shape \(2,\)"),
    ],
)
def test_cross_entropy_label_validation(labels, error, match):
    with pytest.raises(error, match=match):
        F.softmax_cross_entropy(np.zeros((2, 3)), labels)


def test_cross_entropy_argument_errors():
    with pytest.raises(ValueError, match=r"\(B, N\)"):
        F.softmax_cross_entropy(np.zeros(3), np.array([0]))
    with pytest.raises(ValueError, match="reduction"):
        F.softmax_cross_entropy(np.zeros((1, 3)), np.array([0]), reduction="none")


# ----- top-k error ---------------------------------------------------------------------------------
def test_topk_error_hand_made_example():
    logits = np.array(
        [
            [0.1, 0.9, 0.3, 0.2],  # label 1 is the top-1            -> correct at k = 1
            [0.5, 0.4, 0.3, 0.2],  # label 2 is third                 -> wrong at k = 1, 2; right at k = 3
            [0.0, 0.1, 0.2, 0.3],  # label 0 is last                  -> wrong for k <= 3
            [0.7, 0.7, 0.1, 0.0],  # tie with a lower index: rank 1   -> wrong at k = 1, right at k = 2
        ]
    )
    labels = np.array([1, 2, 0, 1])
    assert F.topk_error(logits, labels, k=1) == 0.75
    assert F.topk_error(logits, labels, k=2) == 0.5
    assert F.topk_error(logits, labels, k=3) == 0.25
    assert F.topk_error(logits, labels, k=4) == 0.0
    assert isinstance(F.topk_error(logits, labels), float)


def test_topk_error_all_equal_logits_is_not_free():
    """All-tied logits (e.g. an untrained model) give top-1 error (N-1)/N over all labels, not 0."""
    labels = np.arange(5)
    assert F.topk_error(np.zeros((5, 5)), labels, k=1) == pytest.approx(0.8)


@given(problem=logits_and_labels(), k=st.integers(1, 6))
def test_topk_error_matches_stable_argsort(problem, k):
    logits, labels = problem
    k = min(k, logits.shape[1])
    order = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    expected = 1.0 - np.mean([labels[b] in order[b] for b in range(len(labels))])
    assert F.topk_error(logits, labels, k) == pytest.approx(expected)


def test_topk_error_argument_errors():
    with pytest.raises(ValueError, match="k must be"):
        F.topk_error(np.zeros((2, 3)), np.array([0, 1]), k=4)
    with pytest.raises(ValueError, match="out of range"):
        F.topk_error(np.zeros((2, 3)), np.array([0, 5]))


# ----- backend parity and citations -------------------------------------------------------------------
def test_loss_backend_parity(xp):
    rng = np.random.default_rng(8)
    logits_np, labels_np = rng.standard_normal((6, 4)), np.array([0, 3, 1, 1, 2, 0])

    def run(mod):
        z = gs.Tensor(mod.asarray(logits_np), requires_grad=True)
        labels = mod.asarray(labels_np)
        loss = F.softmax_cross_entropy(z, labels)
        loss.backward()
        return [gs.to_cpu(loss.data), gs.to_cpu(z.grad.data), F.topk_error(z, labels, 2)]

    for e, g in zip(run(np), run(xp)):
        np.testing.assert_allclose(g, e, rtol=1e-12)


def test_loss_docstrings_cite_existing_equations():
    cited = cited_equations(loss_module)
    assert len(cited) >= 2
    for path, n in cited:
        assert f"\\tag{{{n}}}" in (ROOT / path).read_text(), f"{path} has no equation \\tag{{{n}}}"
