"""Static checks of the built HTML book (run by `make book` and by tests/test_site.py).

Fails (exit 1, one line per problem) when a page
- loads a script, stylesheet or image from another host (the book must work offline),
- has math but no local MathJax, or MathJax is missing from _static,
- shows an <img> whose file is not in the build,
- has saved widget views but not the vendored widget runtime.
"""
from __future__ import annotations

import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlparse


class _Refs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.scripts, self.styles, self.images, self.widget_views, self.math = [], [], [], 0, 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "script":
            if a.get("src"):
                self.scripts.append(a["src"])
            if a.get("type") == "application/vnd.jupyter.widget-view+json":
                self.widget_views += 1
        elif tag == "link" and "stylesheet" in (a.get("rel") or ""):
            self.styles.append(a.get("href", ""))
        elif tag == "img" and a.get("src"):
            self.images.append(a["src"])
        elif "math" in (a.get("class") or "").split():
            self.math += 1


def remote(url: str) -> bool:
    parsed = urlparse(url)
    return bool(parsed.scheme in ("http", "https") or url.startswith("//")) and \
        parsed.hostname not in ("localhost", "127.0.0.1")


def check_page(page: Path, root: Path) -> list[str]:
    refs = _Refs()
    refs.feed(page.read_text(encoding="utf-8"))
    rel = page.relative_to(root)
    problems = [f"{rel}: remote {kind} {url}" for kind, urls in
                (("script", refs.scripts), ("stylesheet", refs.styles), ("image", refs.images))
                for url in urls if remote(url)]
    for src in refs.images:
        if not remote(src) and not src.startswith("data:"):
            target = (page.parent / urlparse(src).path).resolve()
            if not target.is_file():
                problems.append(f"{rel}: missing image {src}")
    if refs.math and not any(urlparse(s).path.endswith("mathjax/tex-chtml.js") for s in refs.scripts):
        problems.append(f"{rel}: has math but does not load the local MathJax")
    paths = [urlparse(s).path for s in refs.scripts]
    if refs.widget_views and not (any(p.endswith("/require.js") for p in paths)
                                  and any(p.endswith("/embed-amd.js") for p in paths)):
        problems.append(f"{rel}: has saved widgets but not the vendored require.js/embed-amd.js")
    return problems


def check_site(root: Path) -> list[str]:
    pages = sorted(root.rglob("*.html"))
    if not pages:
        return [f"{root}: no HTML pages (build the book first: make book)"]
    problems = []
    for asset in ("_static/mathjax/tex-chtml.js", "_static/require.js", "_static/embed-amd.js"):
        if not (root / asset).is_file():
            problems.append(f"missing asset {asset}")
    for page in pages:
        if "_static" not in page.parts:
            problems.extend(check_page(page, root))
    return problems


def main(argv: list[str]) -> int:
    root = Path(argv[0] if argv else "_build/html")
    problems = check_site(root)
    for p in problems:
        print(p)
    print(f"check_site: {len(problems)} problem(s) in {root}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
