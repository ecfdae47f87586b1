"""The page's files hold no copy of what ``GET /v1/options`` answers.

The form is built from the server's options when the page loads. A size, style name, bound or
price written into the page's files drifts the day the contract changes (one did: "Digital Art"
and "3D" against the contract's "Digital art" and "3D render"), so this test reads the values from
``talos.api.v1.contract`` and fails when any of them appears in index.html, the scripts or the
stylesheet.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from talos.api.v1 import contract

WEB = Path(__file__).resolve().parents[2] / "services" / "gateway" / "talos_gateway" / "web"
SOURCES = sorted(path for path in WEB.iterdir() if path.suffix in {".html", ".js", ".css"})


def _number(value: float) -> re.Pattern[str]:
    """The number as a literal of its own: not a digit of a longer one (60 in 60_000 or 0.60)."""
    return re.compile(rf"(?<![\w.]){int(value)}(?![\w.])")


def _word(text: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![\w-]){re.escape(text)}(?![\w-])", re.IGNORECASE)


class _Inputs(HTMLParser):
    """Collects the bound-like attributes of every form control."""

    def __init__(self) -> None:
        super().__init__()
        self.bounds: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("input", "textarea"):
            self.bounds += [
                f"<{tag} {name}={value!r}>"
                for name, value in attrs
                if name in ("min", "max", "value", "maxlength")
            ]


def copies(name: str, text: str) -> list[str]:
    """Every value of the options the text holds a copy of."""
    found: list[str] = []
    for size in contract.SIZES:
        if size.id in text:
            found.append(f"size id {size.id}")
        for number in (size.width, size.height):
            if _number(number).search(text):
                found.append(f"size dimension {number}")
        if _word(size.aspect_ratio).search(text):
            found.append(f"aspect ratio {size.aspect_ratio}")
    for style in contract.STYLES:
        if _word(style.name).search(text):
            found.append(f"style name {style.name!r}")
        if re.search(rf"[\"'`]{re.escape(style.id)}[\"'`]", text, re.IGNORECASE):
            found.append(f"style id {style.id!r}")
    steps = contract.STEPS
    assert steps.minimum is not None and steps.maximum is not None
    # The smallest bound (1) is any counter's start: it is looked for in the markup's attributes.
    for value in (steps.maximum, steps.default, contract.SEED_MAX):
        if name.endswith((".js", ".html")) and _number(value).search(text):
            found.append(f"bound {value}")
    if name.endswith(".html"):
        parser = _Inputs()
        parser.feed(text)
        found += [f"bound attribute {attr}" for attr in parser.bounds]
    if re.search(rf"(?<!\d){contract.PRICE_PER_IMAGE}\s*credit", text):
        found.append(f"price {contract.PRICE_PER_IMAGE}")
    return sorted(set(found))


def test_the_page_has_its_files() -> None:
    assert {path.name for path in SOURCES} >= {"index.html", "app.js", "options.js", "style.css"}


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: path.name)
def test_no_copy_of_the_options(path: Path) -> None:
    assert copies(path.name, path.read_text("utf-8")) == []


def test_the_check_finds_the_copies_the_page_used_to_hold() -> None:
    script = """
      const FALLBACK_OPTIONS = {
        styles: [
          { id: "photo", name: "Photo" },
          { id: "digital-art", name: "Digital Art" },
          { id: "3d", name: "3D" },
        ],
        sizes: [{ id: "832x1216", width: 832, height: 1216, aspect_ratio: "portrait" }],
        steps: { min: 1, max: 60, default: 30 },
      };
      const MAX_SEED = 4294967295;
      const OFFLINE_WAIT_MS = 60_000;
    """
    found = copies("app.js", script)
    for expected in (
        "style name 'Photo'",
        "style name 'Digital art'",
        "style id '3d'",
        "size id 832x1216",
        "size dimension 1216",
        "aspect ratio portrait",
        "bound 60",
        "bound 30",
        "bound 4294967295",
    ):
        assert expected in found, (expected, found)
    markup = (
        '<input id="steps" type="number" min="1" max="60" value="30"><span class="price">· 18 credits</span>'
    )
    found = copies("index.html", markup)
    assert "bound attribute <input min='1'>" in found and f"price {contract.PRICE_PER_IMAGE}" in found
