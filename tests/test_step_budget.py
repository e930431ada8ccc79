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


WHOLE_STEP_PENDING = pytest.mark.xfail(
    strict=True,
    reason="the backbone kernels (functions/conv.py, norm.py, pooling.py, activation.py: im2col slices, batch-norm "
    "passes, Python-scalar constants copied with xp.asarray) are being rewritten on another branch; they still "
    "take more than their share. When this XPASSes, remove the marker.",
)


@pytest.mark.parametrize("head", [pytest.param(h, marks=WHOLE_STEP_PENDING) for h in HEADS])
def test_the_whole_step_fits_its_budget(head, steps):
    counts, budget = steps[head], STEP_BUDGETS[head]
    assert counts.syncs <= budget.syncs and counts.copies_to_device <= budget.copies_to_device, counts.summary()
    assert counts.launches <= budget.launches, counts.summary()
