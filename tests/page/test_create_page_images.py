"""Several images per generation on the /create page, in headless Chromium against the real mesh.

The form offers 1 to n.max images (from GET /v1/options); each image has its own tile on the
stage (progress, preview, result or why it was refunded) and its own history entry.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.page.conftest import Browsing
from tests.page.pages import (
    DEFAULT_SIZE,
    DEFAULT_STYLE_NAME,
    N_MAX,
    PRICE,
    RENDER_MS,
    STEPS_MAX,
    api_account,
    gallery_items,
    generate_button,
    images_per_generation,
    open_create,
    prompt_box,
    set_advanced,
    shown_balance,
    sign_in,
    tile_seeds,
    tiles,
    wait_for_results,
)

pytestmark = pytest.mark.browser


def tile_states(page: Page) -> list[str]:
    return [str(state) for state in tiles(page).evaluate_all("lis => lis.map(li => li.dataset.state)")]


def reload(page: Page) -> None:
    page.reload()
    page.wait_for_selector("html[data-ready=true]", state="attached")
    expect(page.locator("#studio")).to_be_visible()


def test_four_images_at_once_in_a_grid_and_in_history(
    browsing: Browsing, mesh: Any, account: Any, screenshots: Path
) -> None:
    context, watch = browsing.new()
    page = open_create(context)
    sign_in(page, account.api_key)
    start = shown_balance(page)
    generate = generate_button(page)

    images_per_generation(page, N_MAX).check()
    expect(generate).to_contain_text(f"{N_MAX * PRICE} credits")  # the cost is price × n
    images_per_generation(page, 1).check()
    expect(generate).to_contain_text(f"{PRICE} credits")
    images_per_generation(page, N_MAX).check()

    set_advanced(page, Steps="2")
    prompt = "candid photo of four sailboats in a harbour, 35mm film"
    prompt_box(page).fill(prompt)
    with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/v1/jobs")) as sent:
        generate.click()
    body = sent.value.post_data_json
    assert isinstance(body, dict) and body["n"] == N_MAX and "seed" not in body

    size = (DEFAULT_SIZE.width, DEFAULT_SIZE.height)
    assert wait_for_results(page, N_MAX) == [size] * N_MAX
    seeds = tile_seeds(page)
    assert seeds == [seeds[0] + i for i in range(N_MAX)]  # image i is seed + i
    assert tile_states(page) == ["done"] * N_MAX
    # A grid: two tiles on the first row.
    first, second = (tiles(page).nth(i).bounding_box() for i in range(2))
    assert first and second and first["y"] == second["y"]
    expect(page.locator("#run-text")).to_have_text(re.compile(rf"^Done: {N_MAX} of {N_MAX} images in "))
    assert page.locator("#progress").evaluate("p => [p.value, p.max]") == [2 * N_MAX, 2 * N_MAX]
    expect(page.locator("#error")).to_be_hidden()
    for index in range(N_MAX):
        link = tiles(page).nth(index).get_by_role("link", name=f"Download image {index + 1}")
        expect(link).to_have_attribute("download", re.compile(rf"-seed{seeds[index]}\.png$"))
    charged = start - N_MAX * PRICE
    expect(page.locator("#balance")).to_have_text(f"{charged:,}")
    assert api_account(mesh.http_url, account.api_key)["balance"] == charged
    page.screenshot(path=screenshots / "09-four-images.png")

    # Each image is its own history entry, with its own seed; also after a reload.
    def history_holds_every_image() -> None:
        expect(gallery_items(page)).to_have_count(N_MAX)
        for index, item in enumerate(gallery_items(page).all()):
            expect(item).to_contain_text(prompt)
            expect(item).to_contain_text(f"seed {seeds[index]} · image {index + 1} of {N_MAX}")
            expect(item.get_by_role("link", name=re.compile("^Download"))).to_be_visible()
        page.wait_for_function(
            "() => [...document.querySelectorAll('#gallery img')].every(i => i.naturalWidth)"
        )

    history_holds_every_image()
    reload(page)
    history_holds_every_image()
    page.screenshot(path=screenshots / "09-four-images-history.png", full_page=True)

    # Opening one puts back its own seed, for one image: Generate would make exactly it again.
    gallery_items(page).nth(2).get_by_role("button", name=re.compile("^Open")).click()
    expect(page.get_by_label("Seed", exact=True)).to_have_value(str(seeds[2]))
    expect(images_per_generation(page, 1)).to_be_checked()
    expect(generate).to_contain_text(f"{PRICE} credits")
    assert wait_for_results(page, 1) == [size]
    assert not watch.foreign()


def test_cancel_cancels_every_image_left_and_says_which_were_refunded(
    browsing: Browsing, mesh: Any, account: Any, screenshots: Path
) -> None:
    context, watch = browsing.new()
    page = open_create(context)
    sign_in(page, account.api_key)
    start = shown_balance(page)
    images_per_generation(page, N_MAX).check()
    set_advanced(page, Steps=str(STEPS_MAX))
    prompt_box(page).fill("candid photo of a lighthouse keeper's kitchen, natural light")
    generate_button(page).click()
    expect(tiles(page).first).to_have_attribute("data-state", "done", timeout=RENDER_MS)

    # A frozen node keeps the other images unfinished however fast this machine renders.
    node_pid = mesh.nodes[0].pid
    os.kill(node_pid, signal.SIGSTOP)
    try:
        assert tile_states(page)[-1] != "done"
        page.get_by_role("button", name="Cancel").click()
        expect(page.locator("#error")).to_have_attribute("data-code", "cancelled", timeout=30_000)
    finally:
        os.kill(node_pid, signal.SIGCONT)
    states = tile_states(page)
    delivered = [i for i, s in enumerate(states) if s == "done"]
    refunded = [i for i, s in enumerate(states) if s == "failed"]
    assert delivered and refunded and len(delivered) + len(refunded) == N_MAX, states
    assert any(m == "DELETE" and p.startswith("/v1/jobs/") for m, p in watch.api_calls())

    alert = page.locator("#error-text")
    expect(alert).to_contain_text("Cancelled.")
    numbers = [str(i + 1) for i in refunded]
    named = (
        f"image {numbers[0]}" if len(numbers) == 1 else f"images {', '.join(numbers[:-1])} and {numbers[-1]}"
    )
    expect(alert).to_contain_text(f"Refunded: {named} ({len(refunded) * PRICE} credits).")
    for i in refunded:
        expect(tiles(page).nth(i)).to_contain_text("Cancelled; refunded")
    page.screenshot(path=screenshots / "10-cancelled-after-one.png")

    charged = start - len(delivered) * PRICE
    expect(page.locator("#balance")).to_have_text(f"{charged:,}")
    assert api_account(mesh.http_url, account.api_key)["balance"] == charged

    # The generation is kept whole: its pictures, and its refunded images with why.
    for _ in range(2):
        expect(gallery_items(page)).to_have_count(N_MAX)
        for i in delivered:
            expect(
                gallery_items(page).nth(i).get_by_role("link", name=re.compile("^Download"))
            ).to_be_visible()
        for i in refunded:
            item = gallery_items(page).nth(i)
            expect(item).to_contain_text("Cancelled; refunded")
            expect(item.get_by_role("link", name=re.compile("^Download"))).to_have_count(0)
        reload(page)
    page.screenshot(path=screenshots / "10-cancelled-history.png", full_page=True)


def test_unreadable_options_show_an_error_with_retry_not_a_form(
    browsing: Browsing, mesh: Any, account: Any, screenshots: Path
) -> None:
    context, _ = browsing.new()
    page = context.new_page()
    answers = iter(["abort", "no sizes"])

    def options(route: Any) -> None:
        answer = next(answers, "real")
        if answer == "abort":
            route.abort("connectionrefused")
        elif answer == "no sizes":
            route.fulfill(json={"styles": [{"id": "photo", "name": "Photo"}], "price_per_image": PRICE})
        else:
            route.fallback()

    page.route("**/v1/options", options)
    page.goto("/create")
    page.wait_for_selector("html[data-ready=true]", state="attached")
    sign_in(page, account.api_key)
    error = page.locator("#options-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("The form could not be loaded")
    expect(error).to_contain_text("could not be reached")
    expect(prompt_box(page)).to_be_hidden()
    expect(generate_button(page)).to_be_hidden()
    page.screenshot(path=screenshots / "11-options-error.png")

    retry = page.get_by_role("button", name="Try again")
    retry.click()
    expect(error).to_contain_text("cannot read (no sizes)")
    expect(generate_button(page)).to_be_hidden()
    expect(retry).to_be_focused()

    retry.click()
    expect(error).to_be_hidden()
    expect(prompt_box(page)).to_be_focused()
    expect(page.get_by_label(DEFAULT_STYLE_NAME, exact=True)).to_be_checked()
    expect(generate_button(page)).to_contain_text(f"{PRICE} credits")


def test_withheld_previews_and_refunded_images_are_shown_as_such(
    strict_browsing: Browsing, strict_mesh: Any, screenshots: Path
) -> None:
    """Here the classifier flags everything: each preview arrives withheld, each image is refunded."""
    account = strict_mesh.create_account(1000)
    context, _ = strict_browsing.new()
    page = open_create(context)
    sign_in(page, account.api_key)
    start = shown_balance(page)
    images_per_generation(page, 2).check()
    set_advanced(page, Steps="20")  # a preview every few steps: several withheld ones per image
    prompt_box(page).fill("candid photo of a rowing boat on a lake")
    page.evaluate(
        """() => {
          window.__withheld = new Set();
          window.__previewSources = 0;
          new MutationObserver((records) => {
            for (const r of records) {
              const li = r.target.closest('li');
              if (r.attributeName === 'data-preview' && r.target.dataset.preview === 'withheld') {
                window.__withheld.add(li.dataset.index + ':' + li.querySelector('.tile-note').textContent);
              }
              if (r.attributeName === 'src' && r.target.classList.contains('tile-preview') && r.target.src) {
                window.__previewSources += 1;
              }
            }
          }).observe(document.getElementById('results'), {subtree: true, attributes: true,
                                                          attributeFilter: ['data-preview', 'src']});
        }"""
    )
    generate_button(page).click()
    expect(page.locator("#stage")).to_have_attribute("data-state", "error", timeout=RENDER_MS)

    assert page.evaluate("[...window.__withheld].sort()") == [
        "0:Preview hidden (18+ off)",
        "1:Preview hidden (18+ off)",
    ]
    assert page.evaluate("window.__previewSources") == 0  # no bytes, so never a broken image
    for index in range(2):
        tile = tiles(page).nth(index)
        expect(tile).to_have_attribute("data-state", "failed")
        expect(tile).to_contain_text("Withheld: looked like adult content; refunded")
    expect(page.locator("#error")).to_have_attribute("data-code", "output_blocked")
    expect(page.locator("#error-text")).to_contain_text("Images 1 and 2 were withheld")
    expect(page.locator("#error-text")).to_contain_text(f"Refunded: images 1 and 2 ({2 * PRICE} credits).")
    page.screenshot(path=screenshots / "12-withheld.png")
    expect(page.locator("#balance")).to_have_text(f"{start:,}")
    assert api_account(strict_mesh.http_url, account.api_key)["balance"] == start
    expect(gallery_items(page)).to_have_count(0)  # nothing was delivered: nothing to keep
