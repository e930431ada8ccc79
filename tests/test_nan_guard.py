"""A diverging run reaches the loss as NaN/Inf on every head, without raising inside forward or backward.

Forward checks no values outside debug mode (gmsop_np/_checks.py: every such check would be a
device read on a GPU), so the trainer's guard on the loss must see a divergence whatever the
head: Newton--Schulz on a NaN covariance, Top-K and the routing with NaN logits, batch norm and
average pooling with an Inf. In debug mode (``gs.debug()``) the second-order heads stop at the
first bad matrix instead, with a ValueError that says what was found.
"""

import numpy as np
import pytest

import gmsop_np as gs
import gmsop_np.functional as F
from gmsop_np.nn.heads import HEADS, get_head
from gmsop_np.presets import get_preset


def _head(name, in_channels=8, num_classes=4):
    spec = get_head(name)
    options = {**spec.tiny, **({"k": 2, "num_components": 4} if "num_components" in spec.options else {})}
    return spec.factory(in_channels, num_classes, preset=get_preset("official"), rng=0, **options).train()


def _features_with(value, xp):
    x = np.random.default_rng(0).standard_normal((4, 8, 3, 3)).astype(np.float32)
    x[1, 2, 0, 1] = value  # one bad entry in one image
    return gs.Tensor(xp.asarray(x))


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # NumPy's inf - inf, expected here
@pytest.mark.parametrize("value", [np.nan, np.inf], ids=["nan", "inf"])
@pytest.mark.parametrize("name", sorted(HEADS))
def test_a_bad_value_reaches_the_objective_without_raising(name, value, xp):
    head = _head(name)
    logits = head(_features_with(value, xp))
    loss = F.objective(logits, xp.asarray(np.array([0, 1, 2, 3])), head.balance_loss)
    assert not np.isfinite(float(loss.item())), f"{name}: a {value} in the input gave the finite loss {loss.item()}"
    loss.backward()  # the trainer stops before the update, but a backward must not raise either


@pytest.mark.parametrize("name", sorted(n for n, spec in HEADS.items() if spec.second_order))
def test_debug_mode_stops_second_order_heads_at_the_first_bad_value(name):
    head = _head(name)
    with gs.debug(), pytest.raises(ValueError, match="NaN or infinite"):
        head(_features_with(np.nan, np))
