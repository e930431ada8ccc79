"""The counter-based generator (gmsop_np/random.py): SplitMix64's stream, the same on every backend,
resumable from its state, and drawn on the device without a host->device copy."""

import numpy as np
import pytest

import gmsop_np as gs
import gmsop_np.functional as F
from gmsop_np.nn import Dropout
from gmsop_np.nn.mixture import GMGAP
from gmsop_np.random import CounterRNG, as_counter_rng
from gmsop_np.testing import device_sim, simulated_gpu

from checks import splitmix64_words


def test_seed_zero_gives_splitmix64s_published_first_outputs():
    """mix(0) = 0, so seed 0 starts SplitMix64 from state 0, whose first outputs are the reference values."""
    assert CounterRNG(0).words(3, np).tolist() == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]


@pytest.mark.parametrize("seed", [1, 12345, 2**63 + 11, 2**64 - 1])
def test_words_follow_the_splitmix64_oracle(seed):
    rng = CounterRNG(seed)
    assert rng.words((2, 3), np).ravel().tolist() == splitmix64_words(seed, 6)
    assert rng.words(4, np).tolist() == splitmix64_words(seed, 4, start=6), "the counter moved on by 6"
    assert rng.state == {"seed": seed, "counter": 10}


def test_uniforms_and_bernoulli_are_the_documented_functions_of_the_words():
    words = np.array(splitmix64_words(5, 1000), dtype=np.uint64)
    np.testing.assert_array_equal(
        CounterRNG(5).random(1000, np.float64, np), (words >> np.uint64(11)).astype(np.float64) * 2.0**-53
    )
    np.testing.assert_array_equal(
        CounterRNG(5).random(1000, np.float32, np), (words >> np.uint64(40)).astype(np.float32) * np.float32(2.0**-24)
    )
    np.testing.assert_array_equal(
        CounterRNG(5).bernoulli(1000, 0.25, np), (words >> np.uint64(11)) < np.uint64(2**51)
    )  # 0.25 * 2^53 = 2^51
    pairs = np.array(splitmix64_words(5, 2000), dtype=np.uint64).reshape(2, 1000)  # Box-Muller: 2n words
    u = (pairs >> np.uint64(11)).astype(np.float64) * 2.0**-53
    expected = np.sqrt(-2 * np.log(1 - u[0])) * np.cos(2 * np.pi * u[1])
    np.testing.assert_allclose(CounterRNG(5).standard_normal(1000, np.float64, np), expected, rtol=1e-13, atol=1e-15)


def test_draws_have_the_right_distribution():
    """Deterministic streams, so these bounds (about 5 standard errors) cannot flake."""
    n = 200_000
    u = CounterRNG(1).random(n, np.float64, np)
    assert u.min() >= 0 and u.max() < 1
    assert abs(u.mean() - 0.5) < 5 * np.sqrt(1 / 12 / n) and abs(u.var() - 1 / 12) < 0.002
    z = CounterRNG(2).standard_normal(n, np.float64, np)
    assert abs(z.mean()) < 5 / np.sqrt(n) and abs(z.var() - 1) < 5 * np.sqrt(2 / n)
    assert abs(np.mean(z**4) - 3) < 5 * np.sqrt(96 / n)  # normal tails: E z^4 = 3, Var z^4 = 105 - 9
    assert abs(CounterRNG(3).bernoulli(n, 0.3, np).mean() - 0.3) < 5 * np.sqrt(0.21 / n)
    a, b = CounterRNG(4).random(n, np.float64, np), CounterRNG(5).random(n, np.float64, np)
    assert abs(np.corrcoef(a, b)[0, 1]) < 5 / np.sqrt(n), "nearby seeds give unrelated streams"


def test_the_stream_is_bit_identical_on_every_backend(xp):
    host, device = CounterRNG(9), CounterRNG(9)
    for draw in (
        lambda r, m: r.words((3, 4), m),
        lambda r, m: r.random((5,), np.float32, m),
        lambda r, m: r.random((2, 2), np.float64, m),
        lambda r, m: r.bernoulli((7,), 0.6, m),
    ):
        expected, got = draw(host, np), draw(device, xp)
        assert isinstance(got, xp.ndarray) and got.dtype == expected.dtype
        np.testing.assert_array_equal(gs.to_cpu(got), expected)
    # normals: the same uniforms through the backend's log/cos/sqrt (CuPy's may differ in the last bit)
    np.testing.assert_allclose(
        gs.to_cpu(device.standard_normal((4, 3), np.float64, xp)),
        host.standard_normal((4, 3), np.float64, np),
        rtol=1e-14,
    )
    assert device.state == host.state


def test_save_and_restore_continue_the_stream_on_any_backend():
    rng = CounterRNG(77)
    rng.random(10, np.float32, np)
    saved = dict(rng.state)
    expected = rng.words(6, np)
    with simulated_gpu():
        resumed = CounterRNG()
        resumed.bit_generator.state = saved  # the spelling a checkpoint uses for NumPy generators too
        np.testing.assert_array_equal(resumed.words(6, device_sim).get(), expected)
    whole = CounterRNG(77).words(16, np)
    np.testing.assert_array_equal(whole[10:], expected)  # draws are consecutive slices of one stream


def test_a_model_resumed_from_its_generator_states_draws_the_same_masks_and_noise():
    """What a checkpoint saves (Module.named_generators) is enough to continue dropout and gating exactly."""

    def build():
        return GMGAP(3, 4, 2, width=4, rng=0), Dropout(0.5, rng=1)

    x = gs.Tensor(np.random.default_rng(0).standard_normal((6, 3, 2, 2)))
    mixture, dropout = build()
    mixture.train()
    mixture(x), dropout(x)  # one step
    states = {name: dict(g.bit_generator.state) for m in (mixture, dropout) for name, g in m.named_generators()}
    expected = mixture(x).data, dropout(x).data, mixture.last_indices
    assert set(states) == {":noise_rng", ":rng"} and all(s["counter"] > 0 for s in states.values())

    mixture2, dropout2 = build()
    mixture2.train()
    for m in (mixture2, dropout2):
        for name, g in m.named_generators():
            g.bit_generator.state = states[name]
    got = mixture2(x).data, dropout2(x).data, mixture2.last_indices
    for e, g in zip(expected, got):
        np.testing.assert_array_equal(e, g)


def test_device_draws_need_no_host_to_device_copy():
    with simulated_gpu(), gs.using_backend("cupy"):
        x = gs.Tensor(device_sim.ones((4, 5), dtype=np.float32))
        with device_sim.counting() as counts:
            F.dropout(x, 0.5, rng=CounterRNG(1))
            F.draw_gate_noise(CounterRNG(2), 4, 5, "independent", np.float32, device_sim)
            CounterRNG(3).words((4, 5), device_sim)
    assert counts.copies_to_device == 0 and counts.syncs == 0, counts.summary()


def test_bad_seeds_and_states_are_refused():
    for seed in (-1, 2**64, 1.5, True, "1"):
        with pytest.raises(TypeError, match="seed"):
            CounterRNG(seed)
    with pytest.raises(ValueError, match="'seed' and 'counter'"):
        CounterRNG(1).state = {"seed": 1}
    with pytest.raises(ValueError, match="non-negative"):
        CounterRNG(1).state = {"seed": 1, "counter": -3}
    with pytest.raises(TypeError, match="float32 or float64"):
        CounterRNG(1).random(3, np.int32, np)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        CounterRNG(1).bernoulli(3, 1.5, np)
    with pytest.raises(TypeError, match="CounterRNG"):
        as_counter_rng(np.random.default_rng(0))
    assert isinstance(as_counter_rng(None), CounterRNG) and as_counter_rng(4).seed == 4
