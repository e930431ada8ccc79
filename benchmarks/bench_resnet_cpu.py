"""Training step of ResNet-18 (GAP head) on the CPU: gmsop_np (NumPy) vs PyTorch, alternated.

One step = forward + softmax cross-entropy + backward + SGD update (momentum 0.9,
weight decay 5e-4), batch 32, 64×64 images, 1000 classes, float32. The same
network is written below in PyTorch; it receives the gmsop_np weights and the two
evaluation-mode forward passes are compared first, to confirm the architectures
agree. Timing: ``harness.compare`` (steps alternated A B / B A, median of the
per-pair ratios). PyTorch is used ONLY here, never by the package or the tests.

    python benchmarks/bench_resnet_cpu.py                  # default threads
    python benchmarks/bench_resnet_cpu.py --threads 1      # one BLAS / PyTorch thread each
    python benchmarks/bench_resnet_cpu.py --profile        # where the NumPy step spends its time
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from harness import compare, environment, format_row

import gmsop_np as gs
import gmsop_np.functional as F
from gmsop_np.models import resnet18
from gmsop_np.optim import SGD


# ----- gmsop_np ------------------------------------------------------------------------------
def numpy_setup(batch, size, num_classes, seed=0):
    model = resnet18(head="gap", num_classes=num_classes, input_size=size, seed=seed)
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    rng = np.random.default_rng(seed)
    x = gs.Tensor(rng.standard_normal((batch, 3, size, size)).astype(np.float32))
    y = rng.integers(0, num_classes, batch)
    return model, opt, x, y


def numpy_step(model, opt, x, y):
    loss = F.softmax_cross_entropy(model(x), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()


# ----- PyTorch (same architecture) ------------------------------------------------------------
def torch_model(num_classes):
    import torch.nn as tnn  # noqa: PLC0415  (benchmarks only)

    class Block(tnn.Module):
        def __init__(self, c_in, c_out, stride):
            super().__init__()
            self.conv1 = tnn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
            self.bn1 = tnn.BatchNorm2d(c_out)
            self.conv2 = tnn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
            self.bn2 = tnn.BatchNorm2d(c_out)
            self.shortcut = None
            if stride != 1 or c_in != c_out:
                self.shortcut = tnn.Sequential(tnn.Conv2d(c_in, c_out, 1, stride, bias=False), tnn.BatchNorm2d(c_out))

        def forward(self, x):
            y = tnn.functional.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            return tnn.functional.relu(y + (x if self.shortcut is None else self.shortcut(x)))

    class Net(tnn.Module):
        def __init__(self):
            super().__init__()
            self.stem = tnn.Sequential(tnn.Conv2d(3, 16, 3, 1, 1, bias=False), tnn.BatchNorm2d(16), tnn.ReLU())
            layers, c = [], 16
            for width, stride in zip((16, 32, 64, 128), (1, 2, 2, 2)):
                layers.append(tnn.Sequential(Block(c, width, stride), Block(width, width, 1)))
                c = width
            self.stages = tnn.Sequential(*layers)
            self.fc = tnn.Linear(128, num_classes)

        def forward(self, x):
            return self.fc(self.stages(self.stem(x)).mean(dim=(2, 3)))

    return Net()


def copy_weights_to_torch(np_model, t_model):
    """Copy every parameter and BN buffer, matching the two models' tensors in order."""
    import torch  # noqa: PLC0415

    # Both models register their tensors in the same order (stem, blocks: conv1, bn1, conv2, bn2,
    # shortcut; fc), so matching by position works; shapes are checked and the logits compared.
    np_params = [p.data for p in np_model.parameters()]
    np_buffers = np_model.buffers()
    t_params = list(t_model.parameters())
    t_buffers = [b for n, b in t_model.named_buffers() if not n.endswith("num_batches_tracked")]
    assert len(np_params) == len(t_params) and len(np_buffers) == len(t_buffers), "architectures differ"
    with torch.no_grad():
        for src, dst in zip(np_params + np_buffers, t_params + t_buffers):
            assert tuple(src.shape) == tuple(dst.shape), f"shape {src.shape} vs {tuple(dst.shape)}"
            dst.copy_(torch.from_numpy(np.ascontiguousarray(src)))


def make_steps(batch=32, size=64, num_classes=1000):
    """The two training steps (same weights, same batch) and the eval-mode logit difference."""
    import torch  # noqa: PLC0415

    model, opt, x, y = numpy_setup(batch, size, num_classes)
    t_model = torch_model(num_classes)
    copy_weights_to_torch(model, t_model)
    tx, ty = torch.from_numpy(x.data), torch.from_numpy(y.astype(np.int64))
    t_model.eval()
    model.eval()
    with torch.no_grad(), gs.no_grad():
        diff = float(np.abs(t_model(tx).numpy() - model(x).data).max())
    t_model.train()
    model.train()
    t_opt = torch.optim.SGD(t_model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    loss_fn = torch.nn.CrossEntropyLoss()

    def torch_step():
        loss = loss_fn(t_model(tx), ty)
        t_opt.zero_grad()
        loss.backward()
        t_opt.step()

    return (lambda: numpy_step(model, opt, x, y)), torch_step, {"max_abs_logit_diff_eval": diff}


def run(threads=None, pairs=8, warmup=2, batch=32, size=64, num_classes=1000):
    gmsop_step, torch_step, info = make_steps(batch, size, num_classes)
    name = f"ResNet-18 + GAP training step, batch {batch}, {size}x{size}"
    return compare(name, gmsop_step, torch_step, pairs, warmup, threads=threads, **info)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--warmup", type=int, default=2, help="untimed pairs first")
    ap.add_argument("--pairs", type=int, default=8, help="timed (gmsop_np, PyTorch) pairs")
    ap.add_argument("--threads", type=int, help="threads for every library (default: the libraries' own)")
    ap.add_argument("--profile", action="store_true", help="profile one gmsop_np step instead of comparing")
    ap.add_argument("--cpu-clock", action="store_true", help="--profile with CPU time (busy machines)")
    ap.add_argument("--json", help="write the results to this JSON file")
    args = ap.parse_args(argv)

    if args.profile:
        from profile_step import profile_report  # noqa: PLC0415

        model, opt, x, y = numpy_setup(args.batch, args.size, args.classes)
        print(profile_report(lambda: numpy_step(model, opt, x, y), threads=args.threads, cpu_clock=args.cpu_clock))
        return
    row = run(args.threads, args.pairs, args.warmup, args.batch, args.size, args.classes)
    print(format_row(row))
    print(f"eval-mode logits agree to {row['max_abs_logit_diff_eval']:.1e}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": environment(), "rows": [row]}, f, indent=2)


if __name__ == "__main__":
    main()
