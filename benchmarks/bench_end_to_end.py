"""End-to-end training step: ResNet-18 + GM-SOP-16-8 at 64x64, gmsop_np vs PyTorch, alternated.

One training step = take a batch from the data loader (shuffle, flip, normalise,
background thread) -> forward -> CE_mean + L_B / B -> backward -> SGD step
(momentum 0.9, weight decay 5e-4). The data are random uint8 images in memory
with 1000 classes, so the figure measures the training application, not a disk.
Each side has its own loader of the same kind.

* gmsop_np on NumPy, batch 32 (``--backend numpy``), and on CuPy, batch 256
  (``--backend cupy``, when a GPU is available);
* the same network written in PyTorch in this script (ResNet-18 of the paper's
  Table 1 + GM-SOP-16-8: gate = 1x1 conv 128->256 +BN+ReLU, 1x1 conv ->128
  +BN+ReLU, SR-SOP (5 NS iterations), noisy Top-8 of 16; components =
  parametric SR-SOP run only on the samples that chose them; BN1d + Dropout(0.2)
  + FC). PyTorch is used by this script only.

    python benchmarks/bench_end_to_end.py                 # NumPy batch 32 vs PyTorch CPU
    python benchmarks/bench_end_to_end.py --backend cupy  # CuPy batch 256 vs PyTorch CUDA
    python benchmarks/bench_end_to_end.py --profile       # where the gmsop_np step spends its time
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from harness import compare, environment, format_row

import gmsop_np as gs
import gmsop_np.functional as F
from gmsop_np.data import ArrayDataset, DataLoader
from gmsop_np.models import resnet18
from gmsop_np.optim import SGD


def random_dataset(n, size, classes, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 3, size, size), dtype=np.uint8)
    return ArrayDataset(images, rng.integers(0, classes, size=n), classes, mean=[120.0] * 3, std=[60.0] * 3)


def endless_batches(batch, size, classes):
    """Batches from a shuffling, flipping loader, pass after pass (8 batches per pass)."""
    loader = DataLoader(random_dataset(8 * batch, size, classes), batch, shuffle=True, train=True, flip=True)
    while True:
        yield from loader


# ----- gmsop_np -----------------------------------------------------------------------------------
def gmsop_step_fn(backend, batch, size, classes=1000):
    """A closure running one training step of gmsop_np on ``backend`` (and the parameter count)."""
    with gs.using_backend(backend):
        model = resnet18(head="gmsop", num_classes=classes, input_size=size, seed=0)
        opt = SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
        batches = endless_batches(batch, size, classes)
        xp = gs.backend.default_xp()
    model.train()

    def step():
        with gs.using_backend(backend):
            x, y = next(batches)
            logits = model(gs.Tensor(x))
            loss = F.softmax_cross_entropy(logits, y) + model.balance_loss / batch
            opt.zero_grad()
            loss.backward()
            opt.step()
            if backend == "cupy":
                xp.cuda.Stream.null.synchronize()

    return step, model.num_parameters()


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


def torch_step_fn(device, batch, size, classes=1000):
    """A closure running one training step of the PyTorch network (and the parameter count)."""
    import torch

    torch.manual_seed(0)
    model = torch_model(classes, size).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    batches = endless_batches(batch, size, classes)

    def step():
        x, y = next(batches)
        x, y = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
        logits, balance = model(x)
        loss = torch.nn.functional.cross_entropy(logits, y) + balance / batch
        opt.zero_grad()
        loss.backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()

    return step, sum(p.numel() for p in model.parameters())


def run(threads=None, pairs=6, warmup=2, backend="numpy", batch=None, size=64):
    batch = batch or (32 if backend == "numpy" else 256)
    gmsop, params_g = gmsop_step_fn(backend, batch, size)
    torch_, params_t = torch_step_fn("cuda" if backend == "cupy" else "cpu", batch, size)
    assert params_g == params_t, f"the two networks differ: {params_g:,} vs {params_t:,} parameters"
    name = f"ResNet-18 + GM-SOP-16-8 end to end, batch {batch}" + (" (CuPy)" if backend == "cupy" else "")
    return compare(name, gmsop, torch_, pairs, warmup, threads=threads, parameters=params_g)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", default="numpy", choices=["numpy", "cupy"])
    parser.add_argument("--batch", type=int, default=None, help="default: 32 (numpy), 256 (cupy)")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=2, help="untimed pairs first")
    parser.add_argument("--pairs", type=int, default=6, help="timed (gmsop_np, PyTorch) pairs")
    parser.add_argument("--threads", type=int, help="threads for every library (default: the libraries' own)")
    parser.add_argument("--profile", action="store_true", help="profile one gmsop_np step instead of comparing")
    parser.add_argument("--cpu-clock", action="store_true", help="--profile with CPU time (busy machines)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    if args.profile:
        from profile_step import profile_report  # noqa: PLC0415

        step, _ = gmsop_step_fn(args.backend, args.batch or 32, args.size)
        print(profile_report(step, threads=args.threads, cpu_clock=args.cpu_clock))
        return
    row = run(args.threads, args.pairs, args.warmup, args.backend, args.batch, args.size)
    print(format_row(row))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"environment": environment(), "rows": [row]}, handle, indent=2)


if __name__ == "__main__":
    main()
