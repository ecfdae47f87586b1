"""What the page tests do with the /create page, and what they read from the contract."""

from __future__ import annotations

import json
import re
import struct
import urllib.request
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from talos.api.v1 import contract

PRICE = contract.PRICE_PER_IMAGE
# The aspect-ratio chips are named after the size's aspect ratio.
RATIOS = [(size.aspect_ratio.capitalize(), size.width, size.height) for size in contract.SIZES]
DEFAULT_SIZE = contract.SIZE_BY_ID[contract.DEFAULT_SIZE]
DEFAULT_STYLE_NAME = contract.STYLE_BY_ID[contract.DEFAULT_STYLE].name
N_MAX = int(contract.N.maximum or 1)
STEPS_MAX = int(contract.STEPS.maximum or 1)
RENDER_MS = 150_000  # a generous bound for one small render on a busy 2-core machine
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def ratio_size(name: str) -> tuple[int, int]:
    return next((width, height) for label, width, height in RATIOS if label == name)


def open_create(context: Any) -> Page:
    page = context.new_page()
    page.goto("/create")
    page.wait_for_selector("html[data-ready=true]", state="attached")
    return page


def sign_in(page: Page, key: str) -> None:
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#studio")).to_be_visible()
    expect(page.locator("#balance")).not_to_have_text("–")


def shown_balance(page: Page) -> int:
    return int(page.locator("#balance").inner_text().replace(",", ""))


def api_account(base_url: str, key: str) -> dict[str, Any]:
    request = urllib.request.Request(base_url + "/v1/account", headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return dict(json.loads(response.read()))


def prompt_box(page: Page) -> Any:
    return page.get_by_label("Prompt", exact=True)


def generate_button(page: Page) -> Any:
    return page.get_by_role("button", name=re.compile("^Generate"))


def ratio(page: Page, name: str) -> Any:
    return page.get_by_label(re.compile(f"^{name}"))


def images_per_generation(page: Page, n: int) -> Any:
    group = page.get_by_role("group", name="Images per generation")
    return group.get_by_label(f"{n} image" if n == 1 else f"{n} images", exact=True)


def set_advanced(page: Page, **fields: str) -> None:
    if not page.locator("#advanced").evaluate("d => d.open"):
        page.locator("#advanced summary").click()
    for label, value in fields.items():
        page.get_by_label(label, exact=True).fill(value)


def record_run_texts(page: Page) -> None:
    """Keeps every text the status line shows (each assignment adds a new text node)."""
    page.evaluate(
        """() => {
          window.__runTexts = [];
          const el = document.getElementById('run-text');
          new MutationObserver((records) => {
            for (const r of records) for (const n of r.addedNodes) window.__runTexts.push(n.textContent);
          }).observe(el, {childList: true});
        }"""
    )


def tiles(page: Page) -> Any:
    """The stage's images, one tile each."""
    return page.locator("#results > li")


def tile_result(page: Page, index: int = 0) -> Any:
    return tiles(page).nth(index).locator(".tile-result")


def wait_for_results(page: Page, count: int = 1) -> list[tuple[int, int]]:
    """Waits for the generation to end with every image delivered; their pixel sizes."""
    expect(page.locator("#stage")).to_have_attribute(
        "data-state", re.compile("done|error"), timeout=RENDER_MS
    )
    if page.locator("#error").is_visible():
        pytest.fail(f"the page showed an error instead of pictures: {page.locator('#error').inner_text()}")
    expect(tiles(page)).to_have_count(count)
    sizes = []
    for index in range(count):
        result = tile_result(page, index)
        expect(result).to_be_visible()
        result.evaluate("img => img.decode()")
        width, height = result.evaluate("img => [img.naturalWidth, img.naturalHeight]")
        sizes.append((int(width), int(height)))
    return sizes


def wait_for_result(page: Page) -> tuple[int, int]:
    return wait_for_results(page, 1)[0]


def tile_seeds(page: Page) -> list[int]:
    return [int(text) for text in tiles(page).locator(".tile-seed").all_inner_texts()]


def gallery_items(page: Page) -> Any:
    return page.locator("#gallery > li")


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == PNG_SIGNATURE, data[:8]
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height
