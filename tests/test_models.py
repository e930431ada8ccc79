"""The paper's networks: parameter counts (Table 3), shapes, presets, seeding, a tiny training run."""

import numpy as np
import pytest

import gmsop_np as gs
import gmsop_np.functional as F
from gmsop_np.models import ResNet, build_model, list_heads, resnet18, resnet50, wrn36_2
from gmsop_np.nn import HEADS, GAPHead, register_head
from gmsop_np.nn.heads import Recipe
from gmsop_np.optim import SGD

# (builder, head, head kwargs, paper's count in millions) -- Table 3 of the paper, 1000 classes
PAPER_COUNTS = [
    (resnet18, "gap512", {}, 1.3),  # ResNet-18-512d
    (resnet50, "gap", {}, 2.4),  # ResNet-50
    (resnet50, "gap512", {}, 2.8),  # ResNet-50-512d
    (resnet50, "gapxd", {"dim": 8256}, 11.6),  # ResNet-50-8256d
    (wrn36_2, "gap", {}, 6.2),  # WRN-36-2 (from Chrabaszcz et al.)
]


@pytest.mark.report
@pytest.mark.parametrize("builder, head, kwargs, paper_millions", PAPER_COUNTS)
def test_parameter_counts_match_table_3(builder, head, kwargs, paper_millions):
    count = builder(head=head, num_classes=1000, **kwargs).num_parameters()
    print(
        f"\n{builder.__name__} head={head} {kwargs}: {count:,} parameters ({count / 1e6:.2f}M; paper {paper_millions}M)"
    )
    assert abs(count / (paper_millions * 1e6) - 1) < 0.05


def test_resnet18_gap_count_by_hand():
    """ResNet-18 with GAP: every conv/BN/FC counted by hand (a wrong stage width changes it)."""
    conv = lambda c_in, c_out, k=3: c_in * c_out * k * k  # noqa: E731
    stem = conv(3, 16) + 2 * 16
    stage1 = 4 * conv(16, 16) + 4 * 2 * 16

    def stage(c_in, c):  # first block with projection, then one identity block
        return conv(c_in, c) + 3 * conv(c, c) + conv(c_in, c, 1) + 5 * 2 * c

    fc = 128 * 1000 + 1000
    expected = stem + stage1 + stage(16, 32) + stage(32, 64) + stage(64, 128) + fc
    assert resnet18(num_classes=1000).num_parameters() == expected == 829_176


def test_same_seed_gives_identical_weights():
    a, b, c = resnet18(num_classes=5, seed=3), resnet18(num_classes=5, seed=3), resnet18(num_classes=5, seed=4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k], err_msg=k)
    assert not np.array_equal(sa["stem.0.W"], sc["stem.0.W"])


@pytest.mark.parametrize("size, side", [(64, 8), (96, 12)])
def test_resnet18_output_shape(size, side, rng):
    model = resnet18(num_classes=5, input_size=size)
    assert model.feature_map_size == side
    x = gs.Tensor(rng.standard_normal((2, 3, size, size)).astype(np.float32))
    with gs.no_grad():
        feats = model.features(x)
        logits = model.head(feats)
    assert feats.shape == (2, 128, side, side) and logits.shape == (2, 5)
    assert model.balance_loss is None and model.head.representation_dim == 128


@pytest.fixture
def probe_head():
    """A throw-away second-order head (GAP inside), registered for one test only."""
    name = "_test_second_order_probe"

    @register_head(name, label="probe", second_order=True, recipe=Recipe(0.1, (1,)), description="test only")
    def factory(in_channels, num_classes, *, preset, rng):
        return GAPHead(in_channels, num_classes, rng=rng)

    yield name
    del HEADS[name]


@pytest.mark.parametrize(
    "preset, size, side", [("paper", 64, 8), ("official", 64, 16), ("paper", 96, 12), ("official", 96, 24)]
)
def test_presets_choose_last_stage_stride_for_second_order_heads(probe_head, preset, size, side, rng):
    tiny = dict(blocks=(1, 1, 1, 1), widths=(2, 2, 2, 3), num_classes=4, input_size=size, preset=preset)
    model = ResNet(head=probe_head, **tiny)
    plain = ResNet(head="gap", **tiny)
    assert model.feature_map_size == side and plain.feature_map_size == size // 8  # GAP: always stride 2
    x = gs.Tensor(rng.standard_normal((2, 3, size, size)).astype(np.float32))
    with gs.no_grad():
        assert model.features(x).shape == (2, 3, side, side)
        assert model(x).shape == (2, 4)


def test_build_model_and_errors():
    assert {"gap", "gap512", "gapxd"} <= set(list_heads())
    assert (
        build_model("ResNet-18", "gap512", num_classes=10).num_parameters()
        == resnet18(head="gap512", num_classes=10).num_parameters()
    )
    assert build_model("wrn-36-2", num_classes=10).stages[3][0].conv1.out_channels == 256
    with pytest.raises(ValueError, match="unknown architecture"):
        build_model("vgg16")
    with pytest.raises(ValueError, match="registered heads"):
        resnet18(head="nope")
    with pytest.raises(ValueError, match="multiple of 8"):
        resnet18(input_size=60)
    with pytest.raises(TypeError, match="head 'gap' does not take the option.*dim"):
        resnet18(head="gap", dim=3)
    model = ResNet((1, 1, 1, 1), (2, 2, 2, 2), num_classes=3, input_size=16)
    with pytest.raises(ValueError, match="input_size=8"):
        model(gs.Tensor(np.zeros((1, 3, 8, 8), np.float32)))


def test_basic_block_gradient_float64(rng):
    """The residual wiring is differentiable end to end (BN in training mode, float64)."""
    from gmsop_np.models import BasicBlock

    block = BasicBlock(2, 3, stride=2, rng=rng)
    for p in block.parameters():
        p.data = p.data.astype(np.float64)
    for m in block.modules():
        for name, b in list(m._buffers.items()):
            m._buffers[name] = b.astype(np.float64)
    x = rng.standard_normal((2, 2, 5, 5))
    gs.check_backward(lambda t: block(t), [x], mode="directional", num_directions=3)


def test_eval_mode_is_per_sample(rng):
    """In evaluation BN uses running statistics, so a sample's logits do not depend on its batch."""
    model = ResNet((1, 1, 1, 1), (4, 4, 4, 4), num_classes=3, input_size=8, seed=1)
    x = rng.standard_normal((4, 3, 8, 8)).astype(np.float32)
    model(gs.Tensor(x))  # one training step's worth of running statistics
    model.eval()
    with gs.no_grad():
        full = model(gs.Tensor(x)).data
        first = model(gs.Tensor(x[:1])).data
    np.testing.assert_allclose(first, full[:1], rtol=1e-5, atol=1e-6)


def _toy_batch():
    """A separable toy problem: class 0 is bright on the left half, class 1 on the right half."""
    rng = np.random.default_rng(0)
    labels = np.arange(16) % 2
    x = rng.standard_normal((16, 3, 8, 8)).astype(np.float32) * 0.5
    x[labels == 0, :, :, :4] += 1.0
    x[labels == 1, :, :, 4:] += 1.0
    return gs.Tensor(x), labels


def _train_toy(steps=20, seed=0):
    model = ResNet((1, 1, 1, 1), (4, 8, 8, 8), num_classes=2, input_size=8, seed=seed)
    opt = SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, labels = _toy_batch()
    losses = []
    for _ in range(steps):
        loss = F.softmax_cross_entropy(model(x), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.report
def test_tiny_network_learns_and_is_reproducible():
    losses = _train_toy()
    print(f"\ntoy losses: first {losses[0]:.4f}, last {losses[-1]:.5f}, factor {losses[0] / losses[-1]:.0f}")
    assert losses[-1] < losses[0] / 20  # falls by more than 20x in 20 steps
    assert _train_toy() == losses  # same seed: bit-identical losses (NumPy)


@pytest.mark.parametrize("head", ["gap", "srsop", "gmsop"])
@pytest.mark.parametrize("preset", ["paper", "official"])
def test_small_inputs_keep_an_8x8_map_for_every_head(head, preset):
    """32x32 inputs (CIFAR, ImageNet32, the built-in sets): no stride in the last stage, so the
    head sees 8x8 positions as the paper's networks do at 64x64 (a 4x4 map is too small for a covariance)."""
    model = build_model("tiny", head, num_classes=4, input_size=32, preset=preset)
    assert model.feature_map_size == 8
    assert build_model("tiny", head, num_classes=4, input_size=16, preset=preset).feature_map_size == 4
    x = gs.Tensor(np.zeros((2, 3, 32, 32), np.float32))
    with gs.no_grad():
        assert model.eval().features(x).shape[2:] == (8, 8)
