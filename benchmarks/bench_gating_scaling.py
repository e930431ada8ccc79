"""How the sparse gated mixture scales with K and N (paper §3.2, Fig. 3; derivations/10_dispatch.md, eq. (9)).

Times one forward + backward of a GM-SOP (or GM-GAP) head -- gate, sparse dispatch,
components, shared SR-SOP, combine, classifier, balance loss -- on NumPy:

* N = 16 with K in {2, 4, 8, 16}: the components see B*K rows, so time should grow with K;
* K = 8 with N in {16, 32, 64}: the rows stay B*K, only the gate and the per-component
  call overhead grow with N, so time should stay nearly flat (goal: N=64 <= 1.3x N=16).

The gate is set up to spread the samples (instead of the constant 1/D start, where every
sample picks components 0..K-1): random W_g scaled so the logits have std ~1, W_n = 0 and
independent noise, so that (nearly) all N components receive samples and the loop over
components is really exercised. Wall time on a shared machine is noisy, so the script also
reports the process CPU time; ratios use the fastest repeat.

    python benchmarks/bench_gating_scaling.py                       # GM-SOP, B=32, 128 ch, 8x8
    python benchmarks/bench_gating_scaling.py --head gmgap --json out.json

On a shared machine run it with one BLAS thread (OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1):
oversubscribed BLAS threads make wall times swing by 5x and more.
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
import gmsop_np.nn.mixture  # noqa: F401  (registers the mixture heads)
from gmsop_np.nn.heads import get_head


def build(head, channels, n, k, x, seed=0):
    """The head with a gate that spreads the samples over all N components (see the module docstring)."""
    module = get_head(head).factory(
        channels, 1000, preset="paper", rng=seed, num_components=n, k=k, noise="independent"
    )
    gate = module.mixture
    with gs.no_grad():
        u = gate.gate_features(x).data  # scale W_g so the logits have std ~1
    rms = float(np.sqrt(np.mean(u.astype(np.float64) ** 2))) or 1.0
    rng = np.random.default_rng(seed)
    gate.W_g.data = (rng.standard_normal(gate.W_g.shape) / (np.sqrt(gate.gate_dim) * rms)).astype(np.float32)
    gate.W_n.data = np.zeros(gate.W_n.shape, dtype=np.float32)  # noise std softplus(0) = 0.69 per logit
    return module


def step(module, x, cotangent):
    logits = module(x)
    loss = F.sum(logits * cotangent) + module.balance_loss / x.shape[0]
    module.zero_grad()
    loss.backward()


def time_config(head, batch, channels, size, n, k, repeats, seed=0):
    rng = np.random.default_rng(seed + 1)
    x = gs.Tensor(rng.standard_normal((batch, channels, size, size)).astype(np.float32))
    module = build(head, channels, n, k, x, seed)
    cot = gs.Tensor(rng.standard_normal((batch, 1000)).astype(np.float32))
    step(module, x, cot)  # warm-up (allocations, caches)
    module.reset_usage()
    times, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        step(module, x, cot)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)  # CPU seconds of this process (all BLAS threads)
    used = int((module.usage_counts > 0).sum())
    return dict(
        N=n,
        K=k,
        median_s=statistics.median(times),
        min_s=min(times),
        times_s=times,
        cpu_min_s=min(cpu),
        components_used=used,
        rows=batch * k,
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--head", default="gmsop", choices=["gmsop", "gmgap"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--channels", type=int, default=128)
    parser.add_argument("--size", type=int, default=8, help="feature map height = width")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ks", default="2,4,8,16", help="K values at N = 16")
    parser.add_argument("--ns", default="16,32,64", help="N values at K = 8")
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args(argv)

    rows = []
    print(
        f"{args.head}: B={args.batch}, C={args.channels}, {args.size}x{args.size}, NumPy, "
        f"{args.repeats} timed forward+backward steps after one warm-up"
    )
    configs = [(16, int(k)) for k in args.ks.split(",")] + [(int(n), 8) for n in args.ns.split(",") if int(n) != 16]
    for n, k in configs:
        r = time_config(args.head, args.batch, args.channels, args.size, n, k, args.repeats)
        rows.append(r)
        print(
            f"  N={n:3d} K={k:3d}: {r['median_s'] * 1e3:8.1f} ms  (min {r['min_s'] * 1e3:.1f}; "
            f"CPU {r['cpu_min_s']:.2f} s; {r['components_used']}/{n} components used, {r['rows']} rows)",
            flush=True,
        )
    base = next(r for r in rows if r["N"] == 16 and r["K"] == 8)
    # Ratios use the fastest repeat: on a shared machine other processes only ever add time,
    # so the minimum is the least disturbed estimate (the median is reported beside it).
    for r in rows:
        r["relative_to_N16_K8"] = r["min_s"] / base["min_s"]
        r["cpu_relative_to_N16_K8"] = r["cpu_min_s"] / base["cpu_min_s"]
    print(
        "relative to N=16, K=8 (fastest repeat): "
        + ", ".join(f"N={r['N']} K={r['K']}: {r['relative_to_N16_K8']:.2f}x" for r in rows)
    )
    print(
        "CPU time relative to N=16, K=8: "
        + ", ".join(f"N={r['N']} K={r['K']}: {r['cpu_relative_to_N16_K8']:.2f}x" for r in rows)
    )
    n64 = next((r for r in rows if r["N"] == 64 and r["K"] == 8), None)
    if n64 is not None:
        print(
            f"N=64 / N=16 at K=8: wall {n64['relative_to_N16_K8']:.2f}x, CPU "
            f"{n64['cpu_relative_to_N16_K8']:.2f}x (goal <= 1.3x)"
        )
    if args.json:
        meta = dict(
            head=args.head,
            batch=args.batch,
            channels=args.channels,
            size=args.size,
            repeats=args.repeats,
            numpy=np.__version__,
            python=platform.python_version(),
            machine=platform.machine(),
            processor=platform.processor(),
            omp_num_threads=os.environ.get("OMP_NUM_THREADS"),
        )
        with open(args.json, "w") as f:
            json.dump(dict(meta=meta, results=rows), f, indent=2)
    return rows


if __name__ == "__main__":
    main()
