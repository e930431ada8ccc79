"""What one training step asks of a GPU, counted on the CPU stand-in for CuPy, and its budget.

One *steady-state training step* is what the trainer runs per batch, without its metric reads:
forward, ``F.objective`` (CE + balance loss / B), zero_grad, backward and ``SGD.step`` (momentum
and weight decay), on a batch already on the device, after warm-up steps (momentum buffers
exist, caches are filled). ``count_training_step`` runs it on
``device_sim`` and returns its counts per phase; ``STEP_BUDGETS`` is what one step may cost
(``tests/test_step_budget.py`` asserts it, ``benchmarks/count_step.py`` reports the details).

Every array operation is a kernel launch on a GPU (about 5-10 µs of fixed cost each, which is
what small batches pay for), every device->host read stalls the pipeline until the GPU has
finished, and every host->device copy is a synchronous transfer. Counts are deterministic.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .. import backend
from .. import functional as F
from ..core import Tensor
from ..models import resnet18
from ..optim import SGD
from . import device_sim, simulated_gpu

__all__ = ["Budget", "STEP_BUDGETS", "count_training_step", "KERNEL_FILES"]


@dataclasses.dataclass(frozen=True)
class Budget:
    """The most a steady-state step may cost: array operations (launches), device->host syncs and
    host->device copies; ``launches_outside_kernels`` is the share of the launches left to
    everything but the backbone's kernel files (``KERNEL_FILES``), the rest is theirs."""

    launches: int
    syncs: int
    copies_to_device: int
    launches_outside_kernels: int


#: ResNet-18 at 64x64, 10 classes (the counts do not depend on the batch size). GM-SOP-16-8 may
#: read one value per step (the routing counts, if its dispatch needed them; the component bank
#: needs none), GAP none.
STEP_BUDGETS = {
    "gmsop": Budget(launches=1000, syncs=1, copies_to_device=0, launches_outside_kernels=450),
    "gap": Budget(launches=700, syncs=0, copies_to_device=0, launches_outside_kernels=80),
}

#: The kernel files of the backbone (convolution, batch norm, pooling, activations): their counts are
#: reported apart, because they are shaped by how those Functions are written (im2col, BN passes).
KERNEL_FILES = (
    "gmsop_np/functions/conv.py",
    "gmsop_np/functions/norm.py",
    "gmsop_np/functions/pooling.py",
    "gmsop_np/functions/activation.py",
)


def count_training_step(head="gmsop", *, batch_size=8, image_size=64, num_classes=10, seed=0, warmup=1, **options):
    """Counts of one steady-state ResNet-18 training step on the stand-in: ``{phase: Counts}`` for
    "forward" (model), "objective" (``F.objective``), "backward" (zero_grad + backward), "sgd" and "step" (all).

    ``options`` go to the head (``num_components``, ``k``, ...). The model is built with ``seed`` and
    trained for ``warmup`` steps first (the SGD storage, momentum buffers and cached indices exist);
    the batch is copied to the device before counting.
    """
    rng = np.random.default_rng(seed)
    with simulated_gpu(), backend.using_backend("cupy"):
        model = resnet18(head=head, num_classes=num_classes, input_size=image_size, seed=seed, **options)
        model.train()
        optimizer = SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        x = device_sim.asarray(rng.standard_normal((batch_size, 3, image_size, image_size)).astype(np.float32))
        y = device_sim.asarray(rng.integers(0, num_classes, batch_size))
        for _ in range(warmup):
            loss = F.objective(model(Tensor(x)), y, model.balance_loss)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        phases = {}
        with device_sim.counting() as phases["step"]:
            with device_sim.counting() as phases["forward"]:
                logits = model(Tensor(x))
            with device_sim.counting() as phases["objective"]:
                loss = F.objective(logits, y, model.balance_loss)
            with device_sim.counting() as phases["backward"]:
                optimizer.zero_grad()
                loss.backward()
            with device_sim.counting() as phases["sgd"]:
                optimizer.step()
    return phases
