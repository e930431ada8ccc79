"""The budget of one training step on a GPU, counted on the CPU stand-in for CuPy (deterministic counts).

One steady-state step of ResNet-18 at 64x64 (forward, F.objective, backward, SGD; no metric reads),
``gmsop_np/testing/step_budget.py``: GM-SOP-16-8 at most 1,000 array operations, 1 device->host sync
and no host->device copy; GAP at most 700 operations and neither. ``benchmarks/count_step.py`` shows
where the operations go; benchmarks/RESULTS.md records the counts before and after.
"""

import pytest
from threadpoolctl import threadpool_limits

from gmsop_np.testing.step_budget import KERNEL_FILES, STEP_BUDGETS, count_training_step

HEADS = sorted(STEP_BUDGETS)


@pytest.fixture(scope="module")
def steps():
    """Counts of one step per head. Batch 2 and one BLAS thread: the counts depend on neither, the time
    does (a few seconds instead of a minute on a busy 2-core machine)."""
    with threadpool_limits(1):
        return {head: count_training_step(head, batch_size=2)["step"] for head in HEADS}


def _outside_kernels(counts, kind):
    return [e for e in counts.events if e.kind == kind and not e.site.startswith(KERNEL_FILES)]


@pytest.mark.parametrize("head", HEADS)
def test_outside_the_backbone_kernels_the_step_reads_nothing_copies_nothing_and_keeps_its_share(head, steps):
    """Everything but convolution, batch norm, pooling and activations: the engine, SGD (flat storage),
    the loss, the gate (device-side random numbers, Top-K), the routed components, SR-SOP."""
    counts, budget = steps[head], STEP_BUDGETS[head]
    assert not _outside_kernels(counts, "copy_to_device"), counts.summary()
    assert len(_outside_kernels(counts, "sync")) <= budget.syncs, counts.summary()
    launches = len(_outside_kernels(counts, "launch"))
    assert launches <= budget.launches_outside_kernels, (
        f"{launches} launches outside the kernel files\\n{counts.summary()}"
    )


#: What one step costs today (2026-12-02): 0 syncs and 0 copies for both heads, as budgeted, but more
#: array operations than the budget. What is left is per-layer: batch norm ~25 operations (10 forward,
#: 9 backward, 6 for the running statistics -- most of them small (C,)-vector arithmetic), a 3x3
#: convolution 14 (padding, im2col copy, product; backward twice that). Fewer needs fused kernels
#: (cupy.fuse / ElementwiseKernel), which only a real GPU can verify (the GPU issue). The ceilings below
#: keep what was reached from regressing; the budget test shows the distance that remains.
REACHED = {"gap": 908, "gmsop": 1363}

WHOLE_STEP_PENDING = pytest.mark.xfail(
    strict=True,
    reason="the operation budget needs fused elementwise kernels for batch norm and the convolutions' "
    "padding (see REACHED); syncs and copies are within budget",
)


@pytest.mark.parametrize("head", HEADS)
def test_the_step_never_costs_more_than_already_reached(head, steps):
    counts, budget = steps[head], STEP_BUDGETS[head]
    assert counts.syncs <= budget.syncs and counts.copies_to_device <= budget.copies_to_device, counts.summary()
    assert counts.launches <= REACHED[head], counts.summary()


@pytest.mark.parametrize("head", [pytest.param(h, marks=WHOLE_STEP_PENDING) for h in HEADS])
def test_the_whole_step_fits_its_budget(head, steps):
    counts, budget = steps[head], STEP_BUDGETS[head]
    assert counts.syncs <= budget.syncs and counts.copies_to_device <= budget.copies_to_device, counts.summary()
    assert counts.launches <= budget.launches, counts.summary()
