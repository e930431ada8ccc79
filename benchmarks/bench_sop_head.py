"""The SR-SOP head alone: covariance -> Newton–Schulz (5 steps) -> triu, forward + backward.

gmsop_np (NumPy, float32, hand-written backwards) against PyTorch (CPU, the same
computation written in torch ops in this script, differentiated by autograd),
alternated step by step (``harness.compare``):

    python benchmarks/bench_sop_head.py                  # B=256, C=128, 8×8, 5 iterations
    python benchmarks/bench_sop_head.py --threads 1
    python benchmarks/bench_sop_head.py --profile        # where the gmsop_np step spends its time

Before timing, the outputs and input gradients of the two are compared.
PyTorch is imported only here (never by the package or the tests).
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from harness import compare, environment, format_row

import gmsop_np as gs
import gmsop_np.functional as F


# ----- gmsop_np ----------------------------------------------------------------------------------
def gmsop_forward(x, num_iters):
    return F.triu_vec(F.sqrtm_newton_schulz(F.cov_pool(x), num_iters))


def gmsop_step(x_data, gv, num_iters, backward):
    x = gs.Tensor(x_data, requires_grad=backward)
    if not backward:
        with gs.no_grad():
            return gmsop_forward(x, num_iters).data
    v = gmsop_forward(x, num_iters)
    v.backward(gv)
    return x.grad.data


# ----- PyTorch: the same computation in torch ops ---------------------------------------------------
def torch_forward(torch, x, num_iters):
    b, c, h, w = x.shape
    feats = x.reshape(b, c, h * w)
    centred = feats - feats.mean(dim=2, keepdim=True)
    sigma = centred @ centred.transpose(1, 2) / (h * w)
    eye = torch.eye(c, dtype=x.dtype)
    t = sigma.diagonal(dim1=1, dim2=2).sum(dim=1).view(b, 1, 1) + 1e-8
    a = sigma / t
    if num_iters == 1:
        p = 0.5 * a @ (3 * eye - a)
    else:
        z = 0.5 * (3 * eye - a)
        y = a @ z
        for _ in range(2, num_iters):
            tk = 0.5 * (3 * eye - z @ y)
            y, z = y @ tk, tk @ z
        p = 0.5 * y @ (3 * eye - z @ y)
    root = torch.sqrt(t) * p
    rows, cols = torch.triu_indices(c, c)
    return root[:, rows, cols]


def torch_step(torch, x_data, gv, num_iters, backward):
    x = torch.from_numpy(x_data).requires_grad_(backward)
    if not backward:
        with torch.no_grad():
            return torch_forward(torch, x, num_iters).numpy()
    v = torch_forward(torch, x, num_iters)
    v.backward(torch.from_numpy(gv))
    return x.grad.numpy()


def make_inputs(batch=256, channels=128, size=8, seed=0):
    """ReLU-like features (B, C, size, size) and a random upstream gradient for the triu output."""
    rng = np.random.default_rng(seed)
    x = np.maximum(rng.standard_normal((batch, channels, size, size)), 0).astype(np.float32)
    gv = rng.standard_normal((batch, channels * (channels + 1) // 2)).astype(np.float32)
    return x, gv


def make_steps(batch=256, channels=128, size=8, iters=5):
    """Forward + backward steps of both implementations, and how far their results differ."""
    import torch  # noqa: PLC0415  (benchmarks only)

    x, gv = make_inputs(batch, channels, size)

    def gmsop(backward):
        return gmsop_step(x, gv, iters, backward)

    def rel(a, b):
        return float(np.abs(a - b).max() / np.abs(b).max())

    info = {
        "max_rel_diff_forward": rel(gmsop(False), torch_step(torch, x, gv, iters, False)),
        "max_rel_diff_input_grad": rel(gmsop(True), torch_step(torch, x, gv, iters, True)),
    }
    return (lambda: gmsop(True)), (lambda: torch_step(torch, x, gv, iters, True)), info


def run(threads=None, pairs=10, warmup=2, batch=256, channels=128, size=8, iters=5):
    gmsop, torch_, info = make_steps(batch, channels, size, iters)
    name = f"SR-SOP head alone, B = {batch}, forward + backward"
    return compare(name, gmsop, torch_, pairs, warmup, threads=threads, **info)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--channels", type=int, default=128)
    parser.add_argument("--size", type=int, default=8, help="side of the square feature map (8 -> L = 64)")
    parser.add_argument("--iters", type=int, default=5, help="Newton-Schulz iterations")
    parser.add_argument("--warmup", type=int, default=2, help="untimed pairs first")
    parser.add_argument("--pairs", type=int, default=10, help="timed (gmsop_np, PyTorch) pairs")
    parser.add_argument("--threads", type=int, help="threads for every library (default: the libraries' own)")
    parser.add_argument("--profile", action="store_true", help="profile one gmsop_np step instead of comparing")
    parser.add_argument("--cpu-clock", action="store_true", help="--profile with CPU time (busy machines)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    args = parser.parse_args(argv)

    if args.profile:
        from profile_step import profile_report  # noqa: PLC0415

        x, gv = make_inputs(args.batch, args.channels, args.size)
        print(
            profile_report(lambda: gmsop_step(x, gv, args.iters, True), threads=args.threads, cpu_clock=args.cpu_clock)
        )
        return
    row = run(args.threads, args.pairs, args.warmup, args.batch, args.channels, args.size, args.iters)
    print(format_row(row))
    print(
        f"max relative difference gmsop_np vs torch: forward {row['max_rel_diff_forward']:.1e}, "
        f"input gradient {row['max_rel_diff_input_grad']:.1e}"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": environment(), "rows": [row]}, f, indent=2)


if __name__ == "__main__":
    main()
