"""A schema-based fuzz run against the served OpenAPI document: no 5xx, no response that breaks it.

Schemathesis (its own CLI, as an integrator would run it) reads /v1/openapi.json from the live
gateway and sends generated valid and invalid requests to every operation. The account has
credits for one image only, so the run stays short whatever the generator picks.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from talos_dev.mesh import LocalMesh

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    ]
)


def test_fuzz_finds_no_server_error_and_no_schema_violation(mesh: LocalMesh, tmp_path: Path) -> None:
    account = mesh.create_account(credits=18)
    command = [
        str(Path(sys.executable).parent / "schemathesis"),
        "run",
        mesh.http_url + "/v1/openapi.json",
        "--phases=examples,fuzzing",
        "--max-examples=10",
        "--workers=1",
        "--seed=20261123",
        "--no-shrink",
        f"--checks={CHECKS}",
        "--request-timeout=120",
        "--suppress-health-check=all",
        f"--header=Authorization: Bearer {account.api_key}",
        "--report=junit",
        f"--report-dir={tmp_path}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=tmp_path, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "Unique failures" not in output or "0 unique failures" in output.lower(), output[-6000:]
