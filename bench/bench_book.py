"""The whole book's execution time on this machine: per notebook and total.

Budget (issue 8): no notebook over 60 s, the whole book under 5 minutes on a 2-core CPU. Executes
each chapter with nbclient exactly as nbval does in CI (a fresh kernel, and an empty smoothpin cache:
SMOOTHPIN_CACHE points at a new temporary directory, so trained networks and experiment results are
recomputed as on a fresh clone) and reports OVER BUDGET loudly in the table.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from toc import toc_files  # noqa: E402

PER_NOTEBOOK_S, TOTAL_S = 60.0, 300.0


def run(path: Path) -> float:
    nb = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory(prefix="smoothpin-bench-cache-") as cache:
        os.environ.update(CUDA_VISIBLE_DEVICES="", SMOOTHPIN_PROGRESS="0", SMOOTHPIN_CACHE=cache)
        client = NotebookClient(nb, timeout=600, kernel_name="python3",
                                resources={"metadata": {"path": str(path.parent)}})
        start = time.perf_counter()
        client.execute()
        return time.perf_counter() - start


def main() -> None:
    rows, total = [], 0.0
    for f in toc_files():
        path = ROOT / f"{f}.ipynb"
        if not path.exists():
            continue
        seconds = run(path)
        total += seconds
        flag = "ok" if seconds <= PER_NOTEBOOK_S else f"**OVER BUDGET** (> {PER_NOTEBOOK_S:.0f} s)"
        rows.append(f"| `{f}` | {seconds:.1f} | {flag} |")
    flag = "ok" if total <= TOTAL_S else f"**OVER BUDGET** (> {TOTAL_S:.0f} s)"
    print("## Whole book: notebook execution time (CPU)\n")
    print("| notebook | seconds | budget |\n| --- | --- | --- |")
    print("\n".join(rows))
    print(f"| **total** | {total:.1f} | {flag} |\n")


if __name__ == "__main__":
    main()
