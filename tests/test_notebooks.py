"""The notebook pipeline: every chapter in _toc.yml has a MyST source and an executed, in-sync .ipynb.

nbval (run by `make test` on chapters/*.ipynb) then re-executes each notebook and compares outputs.
"""
from __future__ import annotations

import sys
from pathlib import Path

import jupytext
import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from toc import toc_files  # noqa: E402

CHAPTERS = [f for f in toc_files() if f.startswith("chapters/")]


def test_toc_lists_chapters():
    assert CHAPTERS, "_toc.yml lists no chapters/ files"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_pair_in_sync_and_executed(chapter):
    md, ipynb = ROOT / f"{chapter}.md", ROOT / f"{chapter}.ipynb"
    assert md.is_file(), f"{md.name} missing: the MyST source is the source of truth"
    assert ipynb.is_file(), f"{ipynb.name} missing: run `make notebooks NB={md.relative_to(ROOT)}`"
    src = jupytext.read(md)
    nb = nbformat.read(ipynb, as_version=4)
    nbformat.validate(nb)
    assert len(src.cells) == len(nb.cells), (
        f"{chapter}: {len(src.cells)} cells in .md but {len(nb.cells)} in .ipynb; re-execute it")
    for i, (a, b) in enumerate(zip(src.cells, nb.cells)):
        assert a.cell_type == b.cell_type, f"{chapter} cell {i}: type differs"
        assert a.source.strip() == b.source.strip(), (
            f"{chapter} cell {i} differs between .md and .ipynb; run `make notebooks`")
        assert a.metadata.get("tags", []) == b.metadata.get("tags", []), f"{chapter} cell {i}: tags"
    ids = [c.id for c in nb.cells]
    assert len(set(ids)) == len(ids), f"{chapter}: duplicate cell ids"
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and cell.source.strip():
            assert cell.execution_count is not None, f"{chapter} cell {i} was not executed"
            assert "execution" not in cell.metadata, f"{chapter} cell {i} carries timing metadata"
            errors = [o for o in cell.outputs if o.output_type == "error"]
            assert not errors, f"{chapter} cell {i} saved an error output"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_display_math_is_a_block(chapter):
    """A `$$` display block glued to the line before it is not parsed as math by MyST (it renders as
    raw TeX, see tests/test_site.py); require a blank line before each opening `$$`."""
    lines = (ROOT / f"{chapter}.md").read_text(encoding="utf-8").splitlines()
    inside, bad = False, []
    for i, line in enumerate(lines):
        if line.strip() == "$$":
            if not inside and i and lines[i - 1].strip():
                bad.append(i + 1)
            inside = not inside
    assert not bad, f"{chapter}.md: put a blank line before the `$$` on line(s) {bad}"
