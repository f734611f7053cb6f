"""Timing and peak memory of one benchmark case, shared by every bench_*.py script.

``measure(fn, device, repeats)`` calls fn once (warm-up, timed as ``first_s``), then ``repeats``
more times, synchronising CUDA around each call. Peak memory is the growth of the process's peak
resident set size (``resource.getrusage(...).ru_maxrss``, KiB on Linux) from just before the first
call (CPU; tracemalloc does not see torch's allocator), or ``torch.cuda.max_memory_allocated`` minus
what was allocated before the first call (CUDA). Run each case in its own process so that its peak
is its own: ``run_child`` runs one case of a benchmark script in a fresh process.
"""
from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any, NamedTuple

import torch


class Measurement(NamedTuple):
    out: Any          # the last call's return value
    median_s: float   # median wall time of the repeated calls
    min_s: float
    first_s: float    # the warm-up call (one-off set-up costs show here)
    peak_mb: float


def sync(device) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def measure(fn, device="cpu", repeats=3) -> Measurement:
    cuda = str(device).startswith("cuda")
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated()
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    first = time.perf_counter() - t0
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    if cuda:
        peak_mb = (torch.cuda.max_memory_allocated() - base_cuda) / 2 ** 20
    else:
        peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) / 1024
    return Measurement(out, statistics.median(times), min(times), first, peak_mb)


def run_child(script, case, options, label):
    """Runs ``python script --case case *options`` in a fresh process (so that its peak memory is
    its own) and returns the JSON dict the child printed on its last line of stdout; on a failed
    child, prints an HTML comment naming ``label`` and the error (it stays out of the rendered
    table) and returns None."""
    p = subprocess.run([sys.executable, os.path.abspath(script), "--case", case, *map(str, options)],
                       capture_output=True, text=True)
    if p.returncode != 0:
        print(f"<!-- {label} failed: {p.stderr.strip().splitlines()[-1:]} -->")
        return None
    return json.loads(p.stdout.strip().splitlines()[-1])
