"""Training-step throughput of ResNet-18 (GAP head) on the CPU: gmsop_np (NumPy) vs PyTorch.

One step = forward + softmax cross-entropy + backward + SGD update (momentum 0.9,
weight decay 5e-4), batch 32, 64×64 images, 1000 classes, float32. We report
images/s from the median of N timed steps after warm-up steps.

When PyTorch is importable the same network is written below in PyTorch, its
weights are copied from the gmsop_np model and the two forward passes are
compared (evaluation mode) to confirm the architectures agree; then it is timed
the same way. PyTorch is used ONLY here, never by the package or the tests.

    python benchmarks/bench_resnet_cpu.py --steps 5 --json benchmarks/resnet_cpu.json
    python benchmarks/bench_resnet_cpu.py --profile       # where the NumPy step spends its time
    python benchmarks/bench_resnet_cpu.py --threads 1     # one BLAS / PyTorch thread each

On a shared machine, multi-threaded BLAS suffers badly when other processes
compete for the cores; ``--threads 1`` gives a comparison that is robust to that.
"""

from __future__ import annotations

import os
import sys


def _threads_from_argv(argv):
    """--threads must act before NumPy is imported (BLAS reads these variables at load time)."""
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--threads="):
            return a.split("=", 1)[1]
    return None


_THREADS = _threads_from_argv(sys.argv)
if _THREADS is not None:
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = _THREADS

import argparse  # noqa: E402
import cProfile  # noqa: E402
import datetime  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import pstats  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import gmsop_np as gs  # noqa: E402
import gmsop_np.functional as F  # noqa: E402
from gmsop_np.models import resnet18  # noqa: E402
from gmsop_np.optim import SGD  # noqa: E402


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


def time_steps(step, warmup, steps):
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return times


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


def run_torch(np_model, batch, size, num_classes, warmup, steps, x_np, y_np):
    import torch  # noqa: PLC0415

    if _THREADS is not None:
        torch.set_num_threads(int(_THREADS))
    t_model = torch_model(num_classes)
    copy_weights_to_torch(np_model, t_model)
    x, y = torch.from_numpy(x_np), torch.from_numpy(y_np.astype(np.int64))
    t_model.eval()
    np_model.eval()
    with torch.no_grad(), gs.no_grad():
        diff = float(np.abs(t_model(x).numpy() - np_model(gs.Tensor(x_np)).data).max())
    t_model.train()
    np_model.train()
    opt = torch.optim.SGD(t_model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        loss = loss_fn(t_model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return time_steps(step, warmup, steps), diff, torch.__version__, torch.get_num_threads()


# ----- main ----------------------------------------------------------------------------------
def profile_numpy_step(model, opt, x, y, top=25):
    prof = cProfile.Profile()
    prof.enable()
    numpy_step(model, opt, x, y)
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    ap.add_argument("--profile", action="store_true", help="cProfile one NumPy step and print the top functions")
    ap.add_argument("--json", help="write the results to this JSON file")
    ap.add_argument("--threads", type=int, help="BLAS / PyTorch threads (default: the libraries' own choice)")
    args = ap.parse_args(argv)

    model, opt, x, y = numpy_setup(args.batch, args.size, args.classes)
    np_times = time_steps(lambda: numpy_step(model, opt, x, y), args.warmup, args.steps)
    result = {
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.processor() or platform.platform()}",
        "numpy": np.__version__,
        "threads_requested": args.threads,
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "config": dict(
            arch="resnet18",
            head="gap",
            batch=args.batch,
            size=args.size,
            classes=args.classes,
            warmup=args.warmup,
            steps=args.steps,
            dtype="float32",
        ),
        "gmsop_np_step_s": np_times,
        "gmsop_np_images_per_s": args.batch / statistics.median(np_times),
    }
    rows = [("gmsop_np (NumPy)", statistics.median(np_times), result["gmsop_np_images_per_s"])]
    if not args.no_torch:
        try:
            import torch  # noqa: F401,PLC0415
        except ImportError:
            print("PyTorch is not importable: skipping the comparison")
        else:
            t_times, diff, version, threads = run_torch(
                model, args.batch, args.size, args.classes, args.warmup, args.steps, x.data, y
            )
            result.update(
                torch=version,
                torch_threads=threads,
                torch_step_s=t_times,
                torch_images_per_s=args.batch / statistics.median(t_times),
                max_abs_logit_diff_eval=diff,
            )
            result["slowdown_vs_torch"] = result["torch_images_per_s"] / result["gmsop_np_images_per_s"]
            rows.append(
                (f"PyTorch {version} CPU ({threads} threads)", statistics.median(t_times), result["torch_images_per_s"])
            )

    print(
        f"ResNet-18 (GAP), batch {args.batch}, {args.size}x{args.size}, float32, "
        f"median of {args.steps} steps after {args.warmup} warm-up"
    )
    print(f"{'implementation':<36} {'step (s)':>10} {'images/s':>10}")
    for name, t, ips in rows:
        print(f"{name:<36} {t:>10.3f} {ips:>10.1f}")
    if "slowdown_vs_torch" in result:
        print(
            f"gmsop_np is {result['slowdown_vs_torch']:.1f}x slower than PyTorch "
            f"(eval-mode logits agree to {result['max_abs_logit_diff_eval']:.1e})"
        )
    if args.profile:
        report = profile_numpy_step(model, opt, x, y)
        print(report)
        result["profile_top"] = report
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
