"""Write PNG screenshots of the built book for people to look at: `make screenshots`.

    python tools/screenshot.py _build/html [page.html ...]   -> screenshots/*.png
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from browser import screenshot  # noqa: E402


def main(argv: list[str]) -> int:
    root = Path(argv[0] if argv else "_build/html")
    pages = [root / p for p in argv[1:]] or sorted(
        p for p in root.rglob("*.html") if "_static" not in p.parts and p.name not in
        ("genindex.html", "search.html"))
    out_dir = Path("screenshots")
    for page in pages:
        name = str(page.relative_to(root)).replace("/", "__").replace(".html", ".png")
        print(screenshot(page, out_dir / name))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
