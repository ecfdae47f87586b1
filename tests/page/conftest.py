"""Headless Chromium (Debian's package, driven by Playwright for Python) against the real mesh."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from talos_dev.mesh import LocalMesh
from tests.conftest import mesh_moderation_env

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
IN_CI = os.environ.get("CI", "").lower() == "true"
REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 375, "height": 812}


def _require_chromium() -> None:
    if CHROMIUM.exists():
        return
    reason = f"{CHROMIUM} is missing: install Debian's chromium (apt-get install -y chromium)"
    if IN_CI:
        pytest.fail(reason + " (CI=true: a missing browser is a failure)")
    pytest.skip(reason)


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    _require_chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as error:  # pragma: no cover - the dev requirements install it
        if IN_CI:
            pytest.fail(f"playwright is not installed: {error}")
        pytest.skip(f"playwright is not installed: {error}")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    """test-artifacts/screenshots (git-ignored), emptied once per session."""
    shutil.rmtree(SCREENSHOTS, ignore_errors=True)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


@dataclass
class Watch:
    """What one browser context asked for and complained about."""

    origin: str
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, url)
    problems: list[str] = field(default_factory=list)

    def foreign(self) -> list[str]:
        return [
            url
            for _, url in self.requests
            if not url.startswith(("data:", "blob:")) and _origin(url) != self.origin
        ]

    def api_calls(self) -> list[tuple[str, str]]:
        return [(m, urlsplit(u).path) for m, u in self.requests if urlsplit(u).path.startswith("/v1/")]


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class Browsing:
    """Opens contexts on the gateway and checks, at teardown, that none of them misbehaved."""

    def __init__(self, browser: Any, base_url: str, downloads: Path) -> None:
        self.browser = browser
        self.base_url = base_url.rstrip("/")
        self.downloads = downloads
        self.contexts: list[tuple[Any, Watch]] = []

    def new(self, viewport: dict[str, int] | None = None) -> tuple[Any, Watch]:
        context = self.browser.new_context(
            viewport=viewport or DESKTOP,
            accept_downloads=True,
            base_url=self.base_url,
            color_scheme="light",
            reduced_motion="reduce",
        )
        watch = Watch(origin=_origin(self.base_url))
        context.on("request", lambda request: watch.requests.append((request.method, request.url)))

        def on_page(page: Any) -> None:
            page.on("pageerror", lambda error: watch.problems.append(f"page error: {error}"))
            page.on("console", lambda msg: _console(watch, msg))

        context.on("page", on_page)
        self.contexts.append((context, watch))
        return context, watch

    def close(self) -> None:
        problems: list[str] = []
        for context, watch in self.contexts:
            context.close()
            problems += watch.problems
            problems += [f"external request: {url}" for url in watch.foreign()]
        self.contexts.clear()
        assert not problems, "\n".join(problems)


def _console(watch: Watch, msg: Any) -> None:
    text = str(msg.text)
    # An HTTP error answer (402, 400 ...) is logged by Chromium as a failed resource: expected.
    if msg.type == "error" and "Failed to load resource" not in text:
        watch.problems.append(f"console error: {text}")
    if "Content Security Policy" in text or "Content-Security-Policy" in text:
        watch.problems.append(f"CSP: {text}")


@pytest.fixture
def browsing(browser: Any, mesh: Any, tmp_path: Path) -> Iterator[Browsing]:
    session = Browsing(browser, mesh.http_url, tmp_path)
    try:
        yield session
    finally:
        session.close()


@pytest.fixture(scope="package")
def strict_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMesh]:
    """A second mesh whose output classifier flags everything (threshold 0): with 18+ off every
    live preview is withheld and every image refunded, as for a picture that looks adult."""
    env = {**mesh_moderation_env(), "TALOS_MODERATION_NSFW_THRESHOLD": "0"}
    local = LocalMesh(tmp_path_factory.mktemp("strict-mesh"), moderation_env=env)
    try:
        local.start(nodes=1)
        yield local
    finally:
        local.stop()


@pytest.fixture
def strict_browsing(browser: Any, strict_mesh: LocalMesh, tmp_path: Path) -> Iterator[Browsing]:
    session = Browsing(browser, strict_mesh.http_url, tmp_path)
    try:
        yield session
    finally:
        session.close()
