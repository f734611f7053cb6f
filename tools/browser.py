"""Headless Chromium helpers: dump a page's DOM after its scripts ran, or take a screenshot.

Used by tests/test_site.py (DOM checks) and tools/screenshot.py (PNGs for people to look at).
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--allow-file-access-from-files", "--virtual-time-budget=20000"]


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _run(args: list[str], timeout: int = 120) -> subprocess.CompletedProcess:
    exe = chromium()
    if exe is None:
        raise RuntimeError("no chromium on PATH (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", *args],
                              capture_output=True, text=True, timeout=timeout, check=True)


def dump_dom(page: Path) -> str:
    """The serialised DOM of a local HTML file after scripts (MathJax, widgets) ran."""
    return _run(["--dump-dom", page.resolve().as_uri()]).stdout


def screenshot(page: Path, out: Path, size: str = "1280,2000") -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    _run([f"--window-size={size}", f"--screenshot={out.resolve()}", page.resolve().as_uri()])
    return out
