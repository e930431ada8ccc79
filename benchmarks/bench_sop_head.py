"""Time the SR-SOP head alone: covariance -> Newton–Schulz (5 steps) -> triu, forward + backward.

gmsop_np (NumPy, float32, hand-written backwards) against PyTorch (CPU, the same
computation written in torch ops, differentiated by autograd), in the same run:

    python benchmarks/bench_sop_head.py                      # B=256, C=128, 8×8, 5 iterations
    python benchmarks/bench_sop_head.py --json results.json  # also write the figures as JSON

Reported: the median wall time of ``repeats`` runs after ``warmup`` runs, for the
forward alone and for forward + backward, and the ratio gmsop_np / PyTorch.
PyTorch is imported only here (never by the package or the tests).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gmsop_np as gs  # noqa: E402
import gmsop_np.functional as F  # noqa: E402


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


# ----- timing ------------------------------------------------------------------------------------------
def median_time(fn, warmup, repeats):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def machine_info(torch):
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return dict(
        cpu=cpu,
        logical_cpus=os.cpu_count(),
        load_average_1min=round(load, 2),
        python=platform.python_version(),
        numpy=np.__version__,
        torch=torch.__version__,
        torch_threads=torch.get_num_threads(),
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--channels", type=int, default=128)
    parser.add_argument("--size", type=int, default=8, help="side of the square feature map (8 -> L = 64)")
    parser.add_argument("--iters", type=int, default=5, help="Newton-Schulz iterations")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH ('-' = stdout)")
    args = parser.parse_args(argv)

    import torch  # noqa: PLC0415  (benchmarks only)

    rng = np.random.default_rng(args.seed)
    shape = (args.batch, args.channels, args.size, args.size)
    x = np.maximum(rng.standard_normal(shape), 0).astype(np.float32)  # ReLU features
    dim = args.channels * (args.channels + 1) // 2
    gv = rng.standard_normal((args.batch, dim)).astype(np.float32)

    # Same computation? Compare outputs and input gradients once.
    out_gs, out_torch = gmsop_step(x, gv, args.iters, False), torch_step(torch, x, gv, args.iters, False)
    grad_gs, grad_torch = gmsop_step(x, gv, args.iters, True), torch_step(torch, x, gv, args.iters, True)
    rel = lambda a, b: float(np.abs(a - b).max() / np.abs(b).max())  # noqa: E731

    results = dict(
        benchmark="SR-SOP head (cov -> NS -> triu), forward + backward",
        date=datetime.date.today().isoformat(),
        config=dict(
            batch=args.batch,
            channels=args.channels,
            map=f"{args.size}x{args.size}",
            ns_iters=args.iters,
            dtype="float32",
            repeats=args.repeats,
            warmup=args.warmup,
        ),
        machine=machine_info(torch),
        max_rel_diff=dict(forward=rel(out_gs, out_torch), input_grad=rel(grad_gs, grad_torch)),
    )
    for name, backward in (("forward", False), ("forward_backward", True)):
        t_gs = median_time(lambda b=backward: gmsop_step(x, gv, args.iters, b), args.warmup, args.repeats)
        t_torch = median_time(lambda b=backward: torch_step(torch, x, gv, args.iters, b), args.warmup, args.repeats)
        results[name] = dict(
            gmsop_np_ms=round(1e3 * t_gs, 2),
            torch_ms=round(1e3 * t_torch, 2),
            ratio_gmsop_over_torch=round(t_gs / t_torch, 2),
        )

    c = results["config"]
    print(f"SR-SOP head: B={c['batch']}, C={c['channels']}, map {c['map']}, NS {c['ns_iters']} iterations, float32")
    print(f"machine: {results['machine']}")
    print(
        f"max relative difference gmsop_np vs torch: forward {results['max_rel_diff']['forward']:.2e}, "
        f"input gradient {results['max_rel_diff']['input_grad']:.2e}"
    )
    for name in ("forward", "forward_backward"):
        r = results[name]
        print(
            f"{name:17s} gmsop_np {r['gmsop_np_ms']:8.2f} ms   torch {r['torch_ms']:8.2f} ms   "
            f"ratio {r['ratio_gmsop_over_torch']:.2f}"
        )
    if args.json:
        text = json.dumps(results, indent=2)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
    return results


if __name__ == "__main__":
    main()
