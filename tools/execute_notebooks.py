"""Execute chapter sources (chapters/NN-name.md, MyST via jupytext) into their paired .ipynb.

The .md is the source of truth. Each run: read the .md, give every cell a stable id (its position and
a hash of its source), execute on CPU with nbclient (widget state saved, no timing metadata), and
write chapters/NN-name.ipynb atomically. Usage:

    python tools/execute_notebooks.py                 # every chapter listed in _toc.yml
    python tools/execute_notebooks.py chapters/01-two-ways.md [...]
"""
from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

import jupytext
import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from toc import toc_files  # noqa: E402


def stable_ids(nb) -> None:
    """Ids that depend only on the cell's position and source, so diffs stay small."""
    for i, cell in enumerate(nb.cells):
        digest = hashlib.sha1(cell.source.encode()).hexdigest()[:8]
        cell.id = f"c{i:03d}-{digest}"


def strip_volatile(nb) -> None:
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    nb.metadata.pop("papermill", None)


def execute(md: Path, timeout: int = 600) -> float:
    nb = jupytext.read(md)
    nb.nbformat, nb.nbformat_minor = 4, 5
    stable_ids(nb)
    os.environ.update(CUDA_VISIBLE_DEVICES="", SMOOTHPIN_PROGRESS="0", PYTHONHASHSEED="0")
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                            store_widget_state=True,
                            resources={"metadata": {"path": str(md.parent)}})
    start = time.perf_counter()
    client.execute()
    elapsed = time.perf_counter() - start
    strip_volatile(nb)
    out = md.with_suffix(".ipynb")
    fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".ipynb.tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        nbformat.write(nb, fh)
    os.replace(tmp, out)
    return elapsed


def main(argv: list[str]) -> int:
    paths = [Path(a).resolve() for a in argv] or [ROOT / f"{f}.md" for f in toc_files()
                                                   if (ROOT / f"{f}.md").exists()
                                                   and f.startswith("chapters/")]
    for md in paths:
        if md.suffix != ".md":
            md = md.with_suffix(".md")
        print(f"executing {md.relative_to(ROOT)} ...", flush=True)
        print(f"  {execute(md):.1f} s -> {md.with_suffix('.ipynb').relative_to(ROOT)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
