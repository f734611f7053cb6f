"""The built book (make book -> _build/html): offline, math typeset, widgets and figures present.

The browser checks render pages in headless Chromium and read the DOM after scripts ran. They skip
with a message when no Chromium is installed, except under SMOOTHPIN_REQUIRE_BROWSER=1 (set by
.ci/run, which installs Chromium), where a missing browser is a failure.
"""
from __future__ import annotations

import os
import re
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "_build" / "html"
sys.path.insert(0, str(ROOT / "tools"))
from browser import chromium, dump_dom  # noqa: E402
from check_site import check_site  # noqa: E402
from toc import toc_files  # noqa: E402

REQUIRE = os.environ.get("SMOOTHPIN_REQUIRE_BROWSER") == "1"
PAGES = [f"{doc}.html" for doc in toc_files()]
# TeX left as text after MathJax ran: a control word (\beta, \mid, ...) or a dollar sign outside code.
RAW_TEX = re.compile(r"\\[A-Za-z]{2,}|\\[()\[\]]|\$")


def _need_site():
    if not (SITE / "intro.html").is_file():
        if REQUIRE:
            pytest.fail("no built book at _build/html: `make test` builds it first")
        pytest.skip("no built book at _build/html (run `make book`)")


def _need_browser():
    if chromium() is None:
        if REQUIRE:
            pytest.fail("SMOOTHPIN_REQUIRE_BROWSER=1 but no chromium on PATH")
        pytest.skip("no chromium on PATH: install Debian's chromium to run the browser checks")


class _Text(HTMLParser):
    """Visible text of a DOM dump (script/style contents dropped)."""

    HIDDEN = ("script", "style", "mjx-assistive-mml", "textarea", "pre", "code")

    def __init__(self):
        super().__init__()
        self.skip, self.parts = 0, []

    def handle_starttag(self, tag, attrs):
        self.skip += tag in self.HIDDEN

    def handle_endtag(self, tag):
        self.skip -= tag in self.HIDDEN

    def handle_data(self, data):
        if not self.skip:
            self.parts.append(data)


def test_static_site_checks():
    _need_site()
    assert check_site(SITE) == []


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_in_browser(page):
    _need_site()
    _need_browser()
    source = (SITE / page).read_text(encoding="utf-8")
    dom = dump_dom(SITE / page)
    # Math was typeset: MathJax replaced the TeX with its own elements and no raw TeX is left.
    if 'class="math' in source:
        assert dom.count("<mjx-container") > 0, f"{page}: MathJax produced no output"
        text = _Text()
        text.feed(dom)
        visible = "".join(text.parts)
        left = sorted({m.group() for m in RAW_TEX.finditer(visible)})
        assert not left, f"{page}: raw TeX left in the rendered text (outside code): {left[:10]}"
    # Widgets saved in the notebook were rendered by the vendored widget manager.
    saved = source.count("application/vnd.jupyter.widget-view+json")
    if saved:
        rendered = len(re.findall(r'class="[^"]*\bwidget-(?:slider|hslider|inline-hbox|vbox|box)\b',
                                  dom))
        assert rendered > 0, f"{page}: {saved} saved widget view(s) but none rendered"
    # Every figure the page shows is an image that exists in the build.
    for src in re.findall(r'<img[^>]+src="([^"]+)"', dom):
        if src.startswith("file://"):
            assert Path(src[len("file://"):]).is_file(), f"{page}: missing image {src}"
