"""Every service starts the same way and refuses a bad setting or a busy port in one line, exit 2."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# (package, the variable of its main port, a variable that must hold a number)
SERVICES = [
    ("talos_gateway", "TALOS_GATEWAY_HTTP_PORT", "TALOS_GATEWAY_QUEUE_BOUND"),
    ("talos_gateway", "TALOS_GATEWAY_GRPC_PORT", "TALOS_GATEWAY_DRAIN_GRACE_SECONDS"),
    ("talos_moderation", "TALOS_MODERATION_PORT", "TALOS_MODERATION_ONNX_THREADS"),
    ("talos_billing", "TALOS_BILLING_PORT", "TALOS_BILLING_POOL_SIZE"),
    ("talos_render", "TALOS_RENDER_METRICS_PORT", "TALOS_RENDER_MAX_BATCH"),
    ("talos_render", "TALOS_RENDER_HEALTH_PORT", "TALOS_RENDER_WARMUP_STEPS"),
]


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _run(package: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    zero = {
        "TALOS_GATEWAY_HTTP_PORT": "0",
        "TALOS_GATEWAY_GRPC_PORT": "0",
        "TALOS_GATEWAY_RELAY_PORT": "0",
        "TALOS_GATEWAY_PEER_PORT": "0",
        "TALOS_MODERATION_PORT": "0",
        "TALOS_BILLING_PORT": "0",
        "TALOS_RENDER_HEALTH_PORT": "0",
        "TALOS_RENDER_METRICS_PORT": "0",
    }
    return subprocess.run(
        [sys.executable, "-m", package],
        env={**os.environ, **zero, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(("package", "port_variable", "number_variable"), SERVICES)
def test_a_bad_setting_is_one_line_naming_it(package: str, port_variable: str, number_variable: str) -> None:
    done = _run(package, {number_variable: "many"})
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and number_variable in lines[0] and "Traceback" not in done.stderr, done.stderr


@pytest.mark.parametrize(("package", "port_variable", "number_variable"), SERVICES)
def test_a_port_in_use_is_one_line_naming_its_variable(
    package: str, port_variable: str, number_variable: str, busy_port: int, tmp_path: object
) -> None:
    data = {"TALOS_BILLING_DATA_DIR": str(tmp_path), "TALOS_RENDER_DATA_DIR": str(tmp_path)}
    done = _run(package, {port_variable: str(busy_port), **data})
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert port_variable in last and str(busy_port) in last and "Traceback" not in done.stderr, done.stderr


@pytest.mark.parametrize("program", ["talos", "talos-admin", "talos-render"])
def test_the_command_line_tools_share_one_style(program: str) -> None:
    """A COMMAND per job, argparse's usage errors (exit 2), defaults named as $VARIABLES."""
    tool = str(Path(sys.executable).parent / program)
    helped = subprocess.run([tool, "--help"], capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0 and "COMMAND" in helped.stdout, helped.stdout
    wrong = subprocess.run([tool, "no-such-command"], capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 2 and f"{program}: error:" in wrong.stderr, wrong.stderr
    first = helped.stdout.split("COMMAND", 2)[-1].split()[0]
    detail = subprocess.run([tool, first, "--help"], capture_output=True, text=True, timeout=60)
    assert detail.returncode == 0 and "(default: $" in detail.stdout + helped.stdout, detail.stdout
