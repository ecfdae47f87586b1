"""`python -m talos_render` as a real process: start-up errors, readiness, health, metrics, SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import urllib.request
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from talos.relay.v1 import relay_pb2
from talos_dev.procs import ServiceProcess, python_module

from .relay_peer import TOKEN, RelayPeer


def node_env(data_dir: Path, **extra: str) -> dict[str, str]:
    return {
        "TALOS_RENDER_DATA_DIR": str(data_dir),
        "TALOS_RENDER_DEVICE": "cpu",
        "TALOS_RENDER_HEALTH_PORT": "0",
        "TALOS_RENDER_METRICS_PORT": "0",
        "TALOS_RENDER_TOKEN": TOKEN,
        "TALOS_RENDER_RECONNECT_MAX_SECONDS": "0.5",
        **extra,
    }


def run_to_exit(env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        python_module("talos_render"),
        env={**{k: v for k, v in os.environ.items() if not k.startswith("TALOS_")}, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_a_missing_model_path_fails_at_start_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"
    done = run_to_exit(node_env(tmp_path, TALOS_RENDER_MODEL=str(missing), TALOS_RENDER_RELAY="127.0.0.1:9"))
    assert done.returncode == 2
    assert str(missing) in done.stderr
    assert "TALOS_READY" not in done.stdout


def test_a_broken_model_folder_fails_at_start_naming_it(tmp_path: Path) -> None:
    broken = tmp_path / "half-a-model"
    (broken / "unet").mkdir(parents=True)
    (broken / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionXLPipeline"}))
    done = run_to_exit(node_env(tmp_path, TALOS_RENDER_MODEL=str(broken), TALOS_RENDER_RELAY="127.0.0.1:9"))
    assert done.returncode == 2
    assert str(broken) in done.stderr
    assert "TALOS_READY" not in done.stdout


def test_a_bad_size_setting_fails_at_start_naming_it(tmp_path: Path) -> None:
    done = run_to_exit(
        node_env(tmp_path, TALOS_RENDER_SIZES="1024x1024,1024", TALOS_RENDER_RELAY="127.0.0.1:9")
    )
    assert done.returncode == 2
    assert "TALOS_RENDER_SIZES" in done.stderr and "'1024'" in done.stderr
    assert "TALOS_READY" not in done.stdout


def test_a_compile_mode_with_its_own_cuda_graphs_fails_at_start_naming_it(tmp_path: Path) -> None:
    done = run_to_exit(
        node_env(tmp_path, TALOS_RENDER_COMPILE_MODE="reduce-overhead", TALOS_RENDER_RELAY="127.0.0.1:9")
    )
    assert done.returncode == 2
    assert "TALOS_RENDER_COMPILE_MODE" in done.stderr
    assert "TALOS_READY" not in done.stdout


async def test_node_process_ready_health_metrics_and_sigterm_hand_back(
    render_data_dir: Path, tmp_path: Path
) -> None:
    relay = RelayPeer()
    await relay.start()
    node = ServiceProcess(
        "render",
        python_module("talos_render", "--relay", relay.address),
        node_env(
            render_data_dir,
            TALOS_RENDER_SIZES="256x256,1024x1024",
            TALOS_RENDER_SHUTDOWN_GRACE_SECONDS="0.2",
        ),
        tmp_path / "render.log",
    )
    try:
        ready = await asyncio.to_thread(node.start, 180)
        assert ready["service"] == "render" and ready["model"] == "talos-tiny-test"

        async with grpc.aio.insecure_channel(ready["health"]) as channel:
            check = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
            assert check.status == health_pb2.HealthCheckResponse.SERVING
        metrics = await asyncio.to_thread(
            lambda: urllib.request.urlopen(f"http://{ready['metrics']}/metrics", timeout=10).read().decode()
        )
        assert "talos_render_ready 1.0" in metrics

        stream = await relay.next_stream()
        assert stream.hello.model == "talos-tiny-test"
        assert stream.hello.concurrency == 1  # auto: one job at a time on a CPU
        stream.send_job(
            relay_pb2.RenderJob(
                job_id="in-hand",
                prompt="a quiet harbour",
                width=256,
                height=256,
                steps=100,
                guidance=5.0,
                seed=3,
                output_format="png",
            )
        )
        assert (await stream.next()).WhichOneof("msg") == "accepted"
        assert (await stream.next()).WhichOneof("msg") == "progress"
        node.signal(signal.SIGTERM)
        events = await stream.job_events("in-hand")
        assert events[-1].WhichOneof("msg") == "failed"
        assert events[-1].failed.reason == "node_shutdown"
        code = await asyncio.to_thread(node.wait, 60)
        assert code == 0
    finally:
        await asyncio.to_thread(node.stop)
        await relay.stop()
    log = (tmp_path / "render.log").read_text()
    assert "a quiet harbour" not in log  # prompts never reach the log
    assert TOKEN not in log  # nor does the node token
