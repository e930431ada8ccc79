"""The SGD step of ResNet-18 + GM-SOP-16-8 (10.35 M parameters, 104 tensors): optim.SGD vs a flat buffer.

Prototype measurement for the lead's flat parameter buffers (prototypes.FlatSGD): the
same update (momentum 0.9, weight decay 5e-4) once per parameter tensor, as
``optim.SGD`` does today, and once over a single flat buffer (gradients gathered into
it first), split over gmsop_np's threads. Both start from the same parameters and
gradients, and the updated parameters are compared.

    python benchmarks/bench_sgd.py [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from harness import set_threads
from prototypes import FlatSGD

import gmsop_np as gs
from gmsop_np.models import resnet18
from gmsop_np.optim import SGD


def model_with_gradients(seed=0):
    model = resnet18(head="gmsop", num_classes=1000, input_size=64, seed=seed)
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        p.grad = gs.Tensor(rng.standard_normal(p.shape).astype(np.float32))
    return model


def median_ms(step, repeats):
    step()  # first step: momentum buffers are created
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int)
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args(argv)
    set_threads(args.threads)

    per_tensor, flat = model_with_gradients(), model_with_gradients()
    sgd = SGD(per_tensor.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    flat_sgd = FlatSGD(flat.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    t_tensor, t_flat = median_ms(sgd.step, args.repeats), median_ms(flat_sgd.step, args.repeats)
    diff = max(float(np.abs(a.data - b.data).max()) for a, b in zip(per_tensor.parameters(), flat.parameters()))
    n = sum(p.size for p in flat.parameters())
    print(f"SGD step, {n:,} parameters in {len(flat.parameters())} tensors, threads={args.threads or 'default'}")
    print(f"optim.SGD (per tensor)    {t_tensor:7.1f} ms")
    print(f"flat buffer (prototype)   {t_flat:7.1f} ms")
    print(f"parameters agree to {diff:.1e} after {args.repeats + 1} steps")


if __name__ == "__main__":
    main()
