"""The overlays rendered once per test session (kustomize, offline), by the kustomize of the
oldest kubectl the operations guide supports: what every manifest test checks is what it applies."""

from __future__ import annotations

from typing import Any

import pytest

from tests.deploy import k8s, kubectl


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict[str, Any]]]:
    command = kubectl.kustomize_command(kubectl.OLDEST)
    return {overlay: k8s.build(k8s.K8S / "overlays" / overlay, command) for overlay in k8s.OVERLAYS}
