"""End-to-end training throughput: ResNet-18 + GM-SOP-16-8 at 64x64 (images/s).

One training step = take a batch from the data loader (shuffle, flip, normalise,
background thread) -> forward -> CE_mean + L_B / B -> backward -> SGD step
(momentum 0.9, weight decay 5e-4). The data are random uint8 images in memory
with 1000 classes, so the figure measures the training application, not a disk.

* gmsop_np on NumPy, batch 32 (``--backend numpy``), and on CuPy, batch 256
  (``--backend cupy``, when a GPU is available);
* the same network written in PyTorch in this script (ResNet-18 of the paper's
  Table 1 + GM-SOP-16-8: gate = 1x1 conv 128->256 +BN+ReLU, 1x1 conv ->128
  +BN+ReLU, SR-SOP (5 NS iterations), noisy Top-8 of 16; components =
  parametric SR-SOP run only on the samples that chose them; BN1d + Dropout(0.2)
  + FC), when ``torch`` is importable. PyTorch is used by this script only.

    python benchmarks/bench_end_to_end.py                 # NumPy batch 32 (+ PyTorch CPU)
    python benchmarks/bench_end_to_end.py --backend cupy  # CuPy batch 256 (+ PyTorch CUDA)
    python benchmarks/bench_end_to_end.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import numpy as np

import gmsop_np as gs
import gmsop_np.functional as F
from gmsop_np.data import ArrayDataset, DataLoader
from gmsop_np.models import resnet18
from gmsop_np.optim import SGD


# ----- gmsop_np -----------------------------------------------------------------------------------
def random_dataset(n, size, classes, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 3, size, size), dtype=np.uint8)
    return ArrayDataset(images, rng.integers(0, classes, size=n), classes, mean=[120.0] * 3, std=[60.0] * 3)


def time_gmsop_np(backend, batch, size, steps, warmup, classes=1000):
    with gs.using_backend(backend):
        model = resnet18(head="gmsop", num_classes=classes, input_size=size, seed=0)
        if backend == "cupy":
            model.to_gpu()
        opt = SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
        data = random_dataset(batch * (steps + warmup), size, classes)
        loader = DataLoader(data, batch, shuffle=True, train=True, flip=True, drop_last=True)
        xp = gs.backend.default_xp()
        times, tick = [], time.perf_counter()
        model.train()
        for i, (x, y) in enumerate(loader):
            logits = model(gs.Tensor(x))
            loss = F.softmax_cross_entropy(logits, y) + model.balance_loss / batch
            opt.zero_grad()
            loss.backward()
            opt.step()
            if backend == "cupy":
                xp.cuda.Stream.null.synchronize()
            now = time.perf_counter()
            if i >= warmup:
                times.append(now - tick)
            tick = now
        params = model.num_parameters()
    return times, params


# ----- PyTorch (the same network, written here) ---------------------------------------------------------
def torch_model(classes, size, num_components=16, k=8, ns_iters=5):
    import torch
    import torch.nn.functional as tf
    from torch import nn

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.c1, self.b1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
            self.c2, self.b2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)
            self.short = None
            if stride != 1 or cin != cout:
                self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            y = self.b2(self.c2(tf.relu(self.b1(self.c1(x)))))
            return tf.relu(y + (x if self.short is None else self.short(x)))

    def sr_sop(x):
        """covariance -> Newton-Schulz square root (trace-normalised) -> upper triangle."""
        b, c, h, w = x.shape
        f = x.reshape(b, c, h * w)
        f = f - f.mean(dim=2, keepdim=True)
        cov = f @ f.transpose(1, 2) / (h * w)
        trace = cov.diagonal(dim1=1, dim2=2).sum(-1).view(b, 1, 1) + 1e-5
        a = cov / trace
        eye = torch.eye(c, device=x.device, dtype=x.dtype).expand(b, c, c)
        z = 0.5 * (3 * eye - a)
        y = a @ z
        for _ in range(ns_iters - 2):
            t = 0.5 * (3 * eye - z @ y)
            y, z = y @ t, t @ z
        p = 0.5 * y @ (3 * eye - z @ y)
        root = p * trace.sqrt()
        iu = torch.triu_indices(c, c, device=x.device)
        return root[:, iu[0], iu[1]]

    class GMSOP(nn.Module):
        def __init__(self, cin=128, hidden=256, out=128):
            super().__init__()
            self.gate_layers = nn.Sequential(
                nn.Conv2d(cin, hidden, 1, bias=False),
                nn.BatchNorm2d(hidden),
                nn.ReLU(),
                nn.Conv2d(hidden, out, 1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(),
            )
            dim = out * (out + 1) // 2
            self.w_g = nn.Parameter(torch.full((num_components, dim), 1.0 / dim))
            self.w_n = nn.Parameter(torch.full((num_components, dim), 1.0 / dim))
            self.components = nn.ModuleList(
                nn.Sequential(
                    nn.Conv2d(cin, hidden, 1, bias=False), nn.ReLU(), nn.Conv2d(hidden, out, 1, bias=False), nn.ReLU()
                )
                for _ in range(num_components)
            )
            self.bn, self.fc = nn.BatchNorm1d(dim), nn.Linear(dim, classes)

        def forward(self, x):
            u = sr_sop(self.gate_layers(x))
            noise = torch.randn(x.shape[0], 1, device=x.device)
            logits = u @ self.w_g.T + noise * tf.softplus(u @ self.w_n.T)
            top, idx = logits.topk(k, dim=1)
            weights = torch.softmax(top, dim=1)  # (B, K)
            importance = torch.zeros(x.shape[0], num_components, device=x.device).scatter(1, idx, weights).sum(0)
            balance = 100.0 * (importance.std() / importance.mean()) ** 2
            sample, slot = torch.arange(x.shape[0], device=x.device).repeat_interleave(k), idx.reshape(-1)
            outputs = torch.empty(x.shape[0] * k, self.fc.in_features, device=x.device)
            for i, component in enumerate(self.components):  # sparse dispatch
                rows = (slot == i).nonzero(as_tuple=True)[0]
                if len(rows):
                    outputs[rows] = sr_sop(component(x[sample[rows]]))
            rep = (outputs.view(x.shape[0], k, -1) * weights.unsqueeze(-1)).sum(1)
            return self.fc(tf.dropout(self.bn(rep), 0.2, self.training)), balance

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            layers, cin = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()], 16
            for width, stride in zip((16, 32, 64, 128), (1, 2, 2, 2)):
                layers += [Block(cin, width, stride), Block(width, width, 1)]
                cin = width
            self.body, self.head = nn.Sequential(*layers), GMSOP()

        def forward(self, x):
            return self.head(self.body(x))

    return Net()


def time_torch(device, batch, size, steps, warmup, classes=1000):
    import torch

    torch.manual_seed(0)
    model = torch_model(classes, size).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    data = random_dataset(batch * (steps + warmup), size, classes)
    loader = DataLoader(data, batch, shuffle=True, train=True, flip=True, drop_last=True)
    times, tick = [], time.perf_counter()
    for i, (x, y) in enumerate(loader):
        x, y = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
        logits, balance = model(x)
        loss = torch.nn.functional.cross_entropy(logits, y) + balance / batch
        opt.zero_grad()
        loss.backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        now = time.perf_counter()
        if i >= warmup:
            times.append(now - tick)
        tick = now
    return times, sum(p.numel() for p in model.parameters())


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="numpy", choices=["numpy", "cupy"])
    parser.add_argument("--batch", type=int, default=None, help="default: 32 (numpy), 256 (cupy)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    batch = args.batch or (32 if args.backend == "numpy" else 256)

    report = {
        "benchmark": "end_to_end_resnet18_gmsop16_8",
        "backend": args.backend,
        "batch": batch,
        "size": args.size,
        "steps": args.steps,
        "warmup": args.warmup,
        "machine": platform.platform(),
        "processor": platform.processor(),
        "cpus": os.cpu_count(),
        "numpy": np.__version__,
        "load_average_before": os.getloadavg(),
    }
    times, params = time_gmsop_np(args.backend, batch, args.size, args.steps, args.warmup)
    step = statistics.median(times)
    report["gmsop_np"] = {"median_step_s": step, "images_per_s": batch / step, "steps_s": times, "params": params}
    print(
        f"gmsop_np ({args.backend}, batch {batch}): {step:.3f} s/step, {batch / step:.1f} images/s, "
        f"{params:,} parameters"
    )
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            print("PyTorch is not installed: no comparison")
        else:
            device = "cuda" if args.backend == "cupy" else "cpu"
            if device == "cuda" and not torch.cuda.is_available():
                print("PyTorch has no CUDA here: no GPU comparison")
            else:
                times, params = time_torch(device, batch, args.size, args.steps, args.warmup)
                step_t = statistics.median(times)
                report["torch"] = {
                    "version": torch.__version__,
                    "device": device,
                    "threads": torch.get_num_threads(),
                    "median_step_s": step_t,
                    "images_per_s": batch / step_t,
                    "steps_s": times,
                    "params": params,
                }
                print(
                    f"PyTorch {torch.__version__} ({device}, batch {batch}): {step_t:.3f} s/step, "
                    f"{batch / step_t:.1f} images/s, {params:,} parameters; gmsop_np slower by "
                    f"{step / step_t:.2f}x"
                )
    report["load_average_after"] = os.getloadavg()
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=2)


if __name__ == "__main__":
    main()
