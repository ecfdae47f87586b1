"""The overlays rendered once per test session (kustomize, offline)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.deploy import k8s


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {overlay: k8s.build(k8s.K8S / "overlays" / overlay) for overlay in k8s.OVERLAYS}
