"""The /create page in headless Chromium against the real mesh (built-in test model).

Every test signs in with a fresh account, so balances are exact. Screenshots of the main
states go to test-artifacts/screenshots/ (git-ignored) for a person to look at.
"""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from talos.api.v1 import contract
from tests.conftest import TEST_RULES
from tests.page.conftest import PHONE, Browsing
from tests.page.pages import (
    DEFAULT_SIZE,
    DEFAULT_STYLE_NAME,
    N_MAX,
    PRICE,
    RATIOS,
    RENDER_MS,
    api_account,
    gallery_items,
    generate_button,
    images_per_generation,
    open_create,
    png_size,
    prompt_box,
    ratio,
    ratio_size,
    record_run_texts,
    set_advanced,
    shown_balance,
    sign_in,
    tile_result,
    tile_seeds,
    tiles,
    wait_for_result,
    wait_for_results,
)

pytestmark = pytest.mark.browser


def refused_prompt() -> str:
    """A prompt the test rule file blocks, built from its made-up trigger words."""
    if not TEST_RULES.exists():
        pytest.fail(f"{TEST_RULES} is missing: the page test needs the mesh's made-up moderation rules")
    rules = json.loads(TEST_RULES.read_text("utf-8"))
    # The two-context rule: a (made-up) minor term together with a (made-up) sexual term.
    return f"candid photo of a {rules['minor_terms'][0]}, {rules['sexual_terms'][0]}"


# -- tests -----------------------------------------------------------------------------------


def test_sign_in_and_generate_each_aspect_ratio(
    browsing: Browsing, mesh: Any, account: Any, screenshots: Path
) -> None:
    context, watch = browsing.new()
    page = open_create(context)
    expect(page.get_by_role("heading", name="Sign in to create")).to_be_visible()
    page.screenshot(path=screenshots / "01-signed-out.png")

    page.get_by_label("API key").fill("tk_not_a_real_key")
    page.get_by_label("API key").press("Enter")
    expect(page.locator("#signin-error")).to_contain_text("not accepted")
    sign_in(page, account.api_key)

    start = shown_balance(page)
    assert start == api_account(mesh.http_url, account.api_key)["balance"]
    expect(page.get_by_label(DEFAULT_STYLE_NAME, exact=True)).to_be_checked()
    expect(ratio(page, DEFAULT_SIZE.aspect_ratio.capitalize())).to_be_checked()
    expect(images_per_generation(page, contract.N.default)).to_be_checked()
    expect(page.locator("#nsfw")).not_to_be_checked()
    expect(page.get_by_label("Steps", exact=True)).to_be_hidden()  # Advanced starts collapsed
    generate = generate_button(page)
    expect(generate).to_contain_text(f"{PRICE} credits")
    expect(page.locator("#model-note")).to_contain_text("built-in test model")
    expect(prompt_box(page)).to_be_focused()
    page.screenshot(path=screenshots / "02-form.png")

    # Keyboard: Tab walks the form in reading order, one stop per radio group.
    order = []
    for _ in range(6):
        page.keyboard.press("Tab")
        order.append(page.evaluate("document.activeElement.id || document.activeElement.tagName"))
    groups = [f"style-{contract.DEFAULT_STYLE}", f"size-{contract.DEFAULT_SIZE}", f"n-{contract.N.default}"]
    assert order == [*groups, "nsfw", "SUMMARY", "generate"], order
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Enter")  # opens Advanced
    expect(page.get_by_label("Steps", exact=True)).to_be_visible()

    set_advanced(page, Steps="2")
    expected = start
    for index, (name, width, height) in enumerate(RATIOS):
        ratio(page, name).check()
        prompt_box(page).fill(f"candid photo of a lighthouse at dusk, {name.lower()} frame, 35mm film")
        record_run_texts(page)
        with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/v1/jobs")) as sent:
            if index == 0:
                prompt_box(page).press("Control+Enter")  # the keyboard shortcut submits
            else:
                generate.click()
        body = sent.value.post_data_json
        assert isinstance(body, dict)
        assert body["size"] == f"{width}x{height}" and body["steps"] == 2 and body["nsfw"] is False
        assert body["n"] == 1
        assert "seed" not in body  # empty seed means random

        assert wait_for_result(page) == (width, height)
        assert page.locator("#progress").evaluate("p => [p.value, p.max]") == [2, 2]
        texts = page.evaluate("window.__runTexts")
        assert any(re.fullmatch(r"Step [12] of 2", t) for t in texts), texts
        expect(page.locator("#run-text")).to_contain_text("step 2 of 2")
        assert len(tile_seeds(page)) == 1
        expected -= PRICE
        expect(page.locator("#balance")).to_have_text(f"{expected:,}")
        page.screenshot(path=screenshots / f"04-result-{name.lower()}.png")

    assert api_account(mesh.http_url, account.api_key)["balance"] == expected
    expect(gallery_items(page)).to_have_count(3)

    # Every button and link has an accessible name.
    unnamed = page.evaluate(
        """() => [...document.querySelectorAll('button, a[href], input, textarea')]
              .filter(el => el.offsetParent !== null || el.getClientRects().length)
              .filter(el => !(el.getAttribute('aria-label') || el.labels?.length || el.textContent.trim()))
              .map(el => el.outerHTML.slice(0, 80))"""
    )
    assert unnamed == []
    assert not watch.foreign()


def test_cancel_mid_run_refunds(browsing: Browsing, mesh: Any, account: Any, screenshots: Path) -> None:
    context, watch = browsing.new()
    page = open_create(context)
    sign_in(page, account.api_key)
    start = shown_balance(page)

    set_advanced(page, Steps="60")
    ratio(page, "Landscape").check()
    prompt_box(page).fill("candid photo of a harbour in fog, 35mm film, natural light")
    generate_button(page).click()
    expect(page.locator("#run-text")).to_have_text(re.compile(r"^Step \d+ of 60$"), timeout=RENDER_MS)
    expect(tiles(page).first.locator(".tile-preview")).to_be_visible()  # the live preview of that step
    page.screenshot(path=screenshots / "03-progress.png")

    page.get_by_role("button", name="Cancel").click()
    expect(page.locator("#error")).to_have_attribute("data-code", "cancelled", timeout=30_000)
    expect(page.locator("#error-text")).to_contain_text("refunded")
    expect(page.locator("#balance")).to_have_text(f"{start:,}")
    assert api_account(mesh.http_url, account.api_key)["balance"] == start
    expect(tile_result(page)).to_be_hidden()
    expect(tiles(page).first).to_contain_text("Cancelled; refunded")
    expect(gallery_items(page)).to_have_count(0)
    assert any(m == "DELETE" and p.startswith("/v1/jobs/") for m, p in watch.api_calls())
    page.screenshot(path=screenshots / "03-cancelled.png")


def test_lost_connection_reconnects_then_gives_up_with_a_refund(
    browsing: Browsing, mesh: Any, account: Any, screenshots: Path
) -> None:
    context, _ = browsing.new()
    page = open_create(context)
    sign_in(page, account.api_key)
    start = shown_balance(page)
    generate = generate_button(page)
    events = "**/v1/jobs/*/events"

    # The first event stream breaks: the page follows the job again and still gets the picture.
    attempts: list[str] = []

    def break_first(route: Any) -> None:
        attempts.append(route.request.url)
        if len(attempts) == 1:
            route.abort("internetdisconnected")
        else:
            route.fallback()

    page.route(events, break_first)
    set_advanced(page, Steps="2")
    prompt_box(page).fill("candid photo of a tram in the rain, 35mm film")
    record_run_texts(page)
    generate.click()
    assert wait_for_result(page) == (DEFAULT_SIZE.width, DEFAULT_SIZE.height)
    assert len(attempts) >= 2
    assert any("reconnecting" in text for text in page.evaluate("window.__runTexts"))
    charged = start - PRICE
    expect(page.locator("#balance")).to_have_text(f"{charged:,}")
    page.unroute(events)

    # The stream never comes back: the page gives up, cancels the job (refunded) and says so.
    page.route(events, lambda route: route.abort("internetdisconnected"))
    set_advanced(page, Steps="60")
    # A frozen node keeps the job unfinished however fast this machine renders 60 steps.
    node_pid = mesh.nodes[0].pid
    os.kill(node_pid, signal.SIGSTOP)
    try:
        generate.click()
        expect(page.locator("#error")).to_have_attribute("data-code", "network", timeout=60_000)
    finally:
        os.kill(node_pid, signal.SIGCONT)
    expect(page.locator("#error-text")).to_contain_text("connection was lost")
    expect(page.locator("#error-text")).to_contain_text("refunded")
    page.screenshot(path=screenshots / "07-error-network.png")
    expect(page.locator("#balance")).to_have_text(f"{charged:,}")
    assert api_account(mesh.http_url, account.api_key)["balance"] == charged


def test_nsfw_asks_for_age_confirmation_once_per_account(
    browsing: Browsing, mesh: Any, account: Any, screenshots: Path
) -> None:
    context, _ = browsing.new()
    page = open_create(context)
    sign_in(page, account.api_key)
    toggle = page.get_by_role("switch", name="NSFW (18+)")
    dialog = page.locator("#age-dialog")
    expect(toggle).not_to_be_checked()

    # Declining (button, then Escape) leaves it off and records nothing.
    toggle.click()
    expect(dialog).to_be_visible()
    page.screenshot(path=screenshots / "05-age-dialog.png")
    page.get_by_role("button", name="No, keep it off").click()
    expect(dialog).to_be_hidden()
    expect(toggle).not_to_be_checked()
    toggle.focus()
    page.keyboard.press("Space")
    expect(dialog).to_be_visible()
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    expect(toggle).not_to_be_checked()
    assert api_account(mesh.http_url, account.api_key)["age_confirmed"] is False

    # Confirming records it on the account.
    toggle.click()
    with page.expect_response(lambda r: r.url.endswith("/v1/account/age-confirmation")) as confirmed:
        page.get_by_role("button", name="I am 18 or older").click()
    assert confirmed.value.status == 200
    expect(toggle).to_be_checked()
    assert api_account(mesh.http_url, account.api_key)["age_confirmed"] is True

    # Never asked again for this account: off and on, after a reload, in a fresh browser.
    def switch_on_without_asking(p: Page) -> None:
        t = p.get_by_role("switch", name="NSFW (18+)")
        if t.is_checked():
            t.click()
        t.click()
        assert p.locator("#age-dialog").evaluate("d => d.open") is False
        expect(t).to_be_checked()

    switch_on_without_asking(page)
    page.reload()
    page.wait_for_selector("html[data-ready=true]", state="attached")
    expect(page.locator("#studio")).to_be_visible()  # the key was kept
    switch_on_without_asking(page)
    other_context, _ = browsing.new()
    fresh = open_create(other_context)
    sign_in(fresh, account.api_key)
    switch_on_without_asking(fresh)

    # Another account is asked.
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("API key")).to_be_visible()
    sign_in(page, mesh.create_account(100).api_key)
    page.get_by_role("switch", name="NSFW (18+)").click()
    expect(dialog).to_be_visible()
    page.get_by_role("button", name="No, keep it off").click()


def test_history_download_reload_and_clear(
    browsing: Browsing, mesh: Any, account: Any, screenshots: Path, tmp_path: Path
) -> None:
    context, watch = browsing.new()
    page = open_create(context)
    sign_in(page, account.api_key)
    set_advanced(page, Steps="2")
    generate = generate_button(page)
    prompts = ["candid photo of a red bicycle against a wall", "candid photo of rain on a window, 35mm film"]
    prompt_box(page).fill(prompts[0])
    generate.click()
    wait_for_result(page)

    # "Reuse seed" puts the shown seed into the form, and the next request carries it.
    (first_seed,) = tile_seeds(page)
    seed = str(first_seed)
    page.get_by_role("button", name="Reuse seed").click()
    expect(page.get_by_label("Seed", exact=True)).to_have_value(seed)
    expect(page.get_by_label("Seed", exact=True)).to_be_focused()
    ratio(page, "Portrait").check()
    prompt_box(page).fill(prompts[1])
    with page.expect_request(lambda r: r.method == "POST" and r.url.endswith("/v1/jobs")) as sent:
        generate.click()
    reused = sent.value.post_data_json
    assert isinstance(reused, dict) and reused["seed"] == int(seed)
    assert wait_for_result(page) == ratio_size("Portrait")
    assert tile_seeds(page) == [first_seed]
    expect(gallery_items(page)).to_have_count(2)
    expect(gallery_items(page).first).to_contain_text(prompts[1])  # newest first
    page.screenshot(path=screenshots / "06-gallery.png", full_page=True)

    # The history survives a reload, and the reload sends nothing about it.
    before = len(watch.requests)
    page.reload()
    page.wait_for_selector("html[data-ready=true]", state="attached")
    expect(gallery_items(page)).to_have_count(2)
    page.wait_for_function("() => [...document.querySelectorAll('#gallery img')].every(i => i.naturalWidth)")
    after = [(m, u) for m, u in watch.requests[before:] if "/v1/" in u]
    assert {(m, u.split("/v1/", 1)[1]) for m, u in after} <= {("GET", "account"), ("GET", "options")}

    # Download is the picture itself.
    item = gallery_items(page).first
    with page.expect_download() as download:
        item.get_by_role("link", name=re.compile("^Download")).click()
    saved = tmp_path / download.value.suggested_filename
    download.value.save_as(saved)
    assert saved.suffix == ".png"
    assert png_size(saved.read_bytes()) == ratio_size("Portrait")

    # Reopen puts the parameters back into the form and shows the picture.
    assert f"seed {seed}" in item.inner_text()
    gallery_items(page).nth(1).get_by_role("button", name=re.compile("^Open")).click()
    expect(prompt_box(page)).to_have_value(prompts[0])
    expect(ratio(page, "Square")).to_be_checked()
    expect(page.get_by_label("Steps", exact=True)).to_have_value("2")
    expect(page.get_by_label("Seed", exact=True)).to_have_value(seed)
    assert wait_for_result(page) == ratio_size("Square")
    assert tile_seeds(page) == [first_seed]
    gallery_items(page).first.get_by_role("button", name=re.compile("^Open")).click()
    expect(prompt_box(page)).to_have_value(prompts[1])
    expect(ratio(page, "Portrait")).to_be_checked()

    # Delete one, then Clear removes the rest, for good.
    gallery_items(page).nth(1).get_by_role("button", name=re.compile("^Delete")).click()
    expect(gallery_items(page)).to_have_count(1)
    page.get_by_role("button", name="Clear history").click()
    expect(page.locator("#clear-dialog")).to_be_visible()
    page.locator("#clear-dialog").get_by_role("button", name="Clear history").click()
    expect(gallery_items(page)).to_have_count(0)
    expect(page.locator("#history-empty")).to_be_visible()
    page.reload()
    page.wait_for_selector("html[data-ready=true]", state="attached")
    expect(page.locator("#studio")).to_be_visible()
    expect(gallery_items(page)).to_have_count(0)


def test_refused_prompt_shows_the_policy_and_charges_nothing(
    browsing: Browsing, mesh: Any, account: Any, screenshots: Path
) -> None:
    context, _ = browsing.new()
    page = open_create(context)
    sign_in(page, account.api_key)
    start = shown_balance(page)
    prompt_box(page).fill(refused_prompt())
    generate_button(page).click()
    expect(page.locator("#error")).to_have_attribute("data-code", "content_policy_violation", timeout=30_000)
    expect(page.locator("#error-text")).to_contain_text("refused by the content policy")
    expect(page.locator("#error-text")).to_contain_text("Nothing was charged")
    expect(tiles(page)).to_have_count(0)
    expect(page.locator("#placeholder")).to_contain_text("No picture this time")
    page.screenshot(path=screenshots / "07-error-policy.png")
    assert shown_balance(page) == start
    assert api_account(mesh.http_url, account.api_key)["balance"] == start
    expect(gallery_items(page)).to_have_count(0)


def test_not_enough_credits_is_said_plainly(browsing: Browsing, mesh: Any, screenshots: Path) -> None:
    poor = mesh.create_account(10)
    context, _ = browsing.new()
    page = open_create(context)
    sign_in(page, poor.api_key)
    prompt_box(page).fill("candid photo of a quiet street")
    generate_button(page).click()
    expect(page.locator("#error")).to_have_attribute("data-code", "insufficient_credits", timeout=30_000)
    expect(page.locator("#error-text")).to_contain_text("Not enough credits")
    assert shown_balance(page) == 10
    page.screenshot(path=screenshots / "07-error-credits.png")


def test_phone_width(browsing: Browsing, mesh: Any, account: Any, screenshots: Path) -> None:
    context, _ = browsing.new(viewport=PHONE)
    page = open_create(context)
    page.screenshot(path=screenshots / "08-phone-signed-out.png")
    sign_in(page, account.api_key)

    def fits() -> bool:
        return bool(page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth"))

    assert fits()
    page.screenshot(path=screenshots / "08-phone-form.png", full_page=True)
    set_advanced(page, Steps="2")
    ratio(page, "Portrait").check()
    images_per_generation(page, N_MAX).check()
    prompt_box(page).fill("candid photo of a cat on a windowsill, natural light")
    generate_button(page).click()
    assert wait_for_results(page, N_MAX) == [ratio_size("Portrait")] * N_MAX
    assert fits()
    # Two tiles side by side, each with its own seed and download, nothing cut off.
    first, second = (tiles(page).nth(i).bounding_box() for i in range(2))
    assert first and second and first["y"] == second["y"] and first["x"] + first["width"] <= second["x"]
    for index in range(N_MAX):
        box = tiles(page).nth(index).get_by_role("link", name=re.compile("^Download")).bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
    page.locator("#stage").scroll_into_view_if_needed()
    page.screenshot(path=screenshots / "08-phone-result.png")
    page.screenshot(path=screenshots / "08-phone-full.png", full_page=True)
