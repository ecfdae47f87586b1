"""Several images per request, against the scripted gateway: interleaved events, the result,
resuming a stream between images, and the CLI's files, report and exit codes."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

import talos_sdk
from talos.api.v1 import api_pb2, contract
from talos_sdk import cli

from .scripted import completed, event, failed, progress, started


def _client(address: str, **kwargs: Any) -> talos_sdk.Client:
    return talos_sdk.Client("tk_test", address, timeout=5, stream_timeout=10, **kwargs)


def _two_images_one_blocked(request: Any, context: grpc.ServicerContext, attempt: int) -> Iterator[Any]:
    """Image 1 ends first (refunded), image 0 then completes; events of both interleave."""
    yield event("job-2", 0, queued=api_pb2.Queued(position=1, eta_seconds=2))
    yield event("job-2", 1, queued=api_pb2.Queued(position=1, eta_seconds=2))  # another image's
    yield started("job-2", 0)
    yield started("job-2", 1)
    yield progress("job-2", 1, 2, image=1, preview_withheld=True)
    yield progress("job-2", 1, 2, image=0)
    yield failed("job-2", 1, "output_blocked", seed=11)
    yield progress("job-2", 2, 2, image=0)
    yield completed("job-2", seed=10, image=0, balance=64)


def test_generate_returns_every_image_and_every_refund_in_image_order(gateway, tmp_path: Path):
    servicer, address = gateway
    servicer.generate_script = _two_images_one_blocked
    seen: list[talos_sdk.Event] = []
    with _client(address) as client:
        result = client.generate("x", n=2, seed=10, on_event=seen.append)
    assert servicer.named("Generate")[0][1].n == 2
    assert [(type(e).__name__, e.image) for e in seen] == [
        ("Queued", 0),
        ("Queued", 1),
        ("Started", 0),
        ("Started", 1),
        ("Progress", 1),
        ("Progress", 0),
        ("Failed", 1),
        ("Progress", 0),
        ("Completed", 0),
    ]
    withheld = [e for e in seen if isinstance(e, talos_sdk.Progress) and e.preview_withheld]
    assert [(e.image, e.preview_jpeg) for e in withheld] == [(1, None)]

    assert isinstance(result, talos_sdk.Generation) and result.job_id == "job-2" and result.n == 2
    assert [(image.image, image.seed) for image in result.images] == [(0, 10)]
    assert [(f.image, f.seed, f.code) for f in result.failed] == [(1, 11, "output_blocked")]
    assert isinstance(result.failed[0].error(), talos_sdk.OutputBlocked)
    assert result.credits_charged == 18 and result.balance == 64
    assert result.save(tmp_path / "out.png") == [tmp_path / "out-0.png"]
    assert (tmp_path / "out-0.png").read_bytes() == result.images[0].data


def test_when_no_image_is_delivered_the_first_in_image_order_is_raised(gateway):
    servicer, address = gateway

    def generate(request: Any, context: grpc.ServicerContext, attempt: int) -> Iterator[Any]:
        yield failed("job-f", 1, "timeout")
        yield failed("job-f", 0, "output_blocked")

    servicer.generate_script = generate
    with _client(address) as client, pytest.raises(talos_sdk.OutputBlocked) as caught:
        client.generate("x", n=2)
    assert caught.value.job_id == "job-f"


def test_a_stream_broken_between_images_resumes_each_image_where_it_was(gateway):
    servicer, address = gateway

    def generate(request: Any, context: grpc.ServicerContext, attempt: int) -> Iterator[Any]:
        yield started("job-r", 0)
        yield started("job-r", 1)
        yield completed("job-r", seed=5, image=0)
        yield progress("job-r", 1, 2, image=1)
        context.abort(grpc.StatusCode.UNAVAILABLE, "gateway went away")

    def watch(request: Any, context: grpc.ServicerContext, attempt: int) -> Iterator[Any]:
        # The replay: image 0's end (the gateway cannot know the break came after this side
        # had it), image 1's latest state, then on.
        yield started("job-r", 0)
        yield completed("job-r", seed=5, image=0)
        yield started("job-r", 1)
        yield progress("job-r", 1, 2, image=1)
        yield progress("job-r", 2, 2, image=1)
        yield completed("job-r", seed=6, image=1)

    servicer.generate_script = generate
    servicer.watch_script = watch
    with _client(address) as client:
        stream = client.stream("x", n=2, seed=5)
        events = [(type(e).__name__, e.image, getattr(e, "step", None)) for e in stream]
        result = stream.result()
    assert events == [
        ("Started", 0, None),
        ("Started", 1, None),
        ("Completed", 0, None),
        ("Progress", 1, 1),
        ("Progress", 1, 2),
        ("Completed", 1, None),
    ]
    assert [(image.image, image.seed) for image in result.images] == [(0, 5), (1, 6)]
    assert len(servicer.named("Generate")) == 1 and len(servicer.named("Watch")) == 1


def test_watch_ends_when_the_server_ends_the_job_without_knowing_n(gateway):
    servicer, address = gateway
    servicer.watch_script = lambda request, context, attempt: iter(
        [completed("job-w", seed=1, image=0), failed("job-w", 1, "cancelled", seed=2)]
    )
    with _client(address) as client:
        result = client.watch("job-w").result()
    assert [image.seed for image in result.images] == [1] and [f.code for f in result.failed] == ["cancelled"]
    assert len(servicer.named("Watch")) == 1  # an OK end after the images' ends is not resumed


def test_after_the_last_image_the_stream_is_read_to_its_end(gateway):
    """The gateway marks an image delivered after sending it; a cancel could cut in before."""
    servicer, address = gateway
    active_after_send: list[bool] = []

    def generate(request: Any, context: grpc.ServicerContext, attempt: int) -> Iterator[Any]:
        yield completed("job-d", image=1)
        yield completed("job-d", image=0)
        time.sleep(0.2)  # the server's own bookkeeping after the last message
        active_after_send.append(context.is_active())

    servicer.generate_script = generate
    with _client(address) as client:
        assert len(client.generate("x", n=2).images) == 2
    deadline = time.monotonic() + 5
    while not active_after_send and time.monotonic() < deadline:
        time.sleep(0.01)
    assert active_after_send == [True]


async def test_async_generate_returns_every_image(gateway):
    servicer, address = gateway
    servicer.generate_script = _two_images_one_blocked
    async with talos_sdk.AsyncClient("tk", address, timeout=5) as client:
        result = await client.generate("x", n=2)
        stream = client.stream("x", n=2)
        kinds = [type(e).__name__ async for e in stream]
        streamed = await stream.result()
    assert [image.image for image in result.images] == [0] == [i.image for i in streamed.images]
    assert [f.image for f in result.failed] == [1] and kinds[-1] == "Completed"


# -- the CLI ------------------------------------------------------------------------------------


def _talos(address: str, *args: str) -> int:
    return cli.main(["--api-key", "tk", "--address", address, *args])


def test_cli_writes_each_image_lists_refunds_and_exits_6_when_some_were_refunded(
    gateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    servicer, address = gateway
    servicer.generate_script = _two_images_one_blocked
    out = tmp_path / "out.png"
    assert _talos(address, "generate", "x", "-n", "2", "--seed", "10", "-o", str(out)) == cli.EXIT_PARTIAL
    captured = capsys.readouterr()
    assert (tmp_path / "out-0.png").read_bytes().startswith(b"\x89PNG") and not out.exists()
    assert not (tmp_path / "out-1.png").exists()
    assert f"image 0: wrote {tmp_path / 'out-0.png'} (1024x1024 png), seed: 10" in captured.out
    assert "image 1: refunded, seed: 11 (output_blocked:" in captured.out
    assert "credits charged: 18" in captured.out and "balance: 64" in captured.out
    assert "image 1: A preview was made but withheld" in captured.err  # the progress display
    request = servicer.named("Generate")[0][1]
    assert request.n == 2 and request.seed == 10

    assert _talos(address, "generate", "x", "-n", "2", "-o", str(out), "--json", "-q") == cli.EXIT_PARTIAL
    info = json.loads(capsys.readouterr().out)
    assert [(i["image"], i["seed"], i["path"]) for i in info["images"]] == [
        (0, 10, str(tmp_path / "out-0.png"))
    ]
    assert info["refunded"] == [
        {"image": 1, "seed": 11, "error": {"code": "output_blocked", "message": "image 1: output_blocked"}}
    ]
    assert info["credits_charged"] == 18 and info["job_id"] == "job-2"


def test_cli_refuses_stdout_for_several_images_and_bounds_from_the_contract(
    gateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]
):
    servicer, address = gateway
    assert _talos(address, "generate", "x", "-n", "2", "-o", "-") == cli.EXIT_USAGE
    assert "one image" in capsys.readouterr().err
    too_many = str(int(contract.N.maximum) + 1)
    assert _talos(address, "generate", "x", "-n", too_many, "-o", str(tmp_path / "o.png")) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "'n' must be between" in err and "(field: n)" in err
    assert not servicer.calls and not list(tmp_path.iterdir())


def test_cli_all_images_refunded_exits_with_the_first_failure(gateway, tmp_path: Path, capsys):
    servicer, address = gateway
    servicer.generate_script = lambda request, context, attempt: iter(
        [failed("job-x", 0, "output_blocked", seed=1), failed("job-x", 1, "output_blocked", seed=2)]
    )
    code = _talos(address, "generate", "x", "-n", "2", "-o", str(tmp_path / "o.png"))
    err = capsys.readouterr().err
    assert code == cli.EXIT_POLICY and "talos: error: output_blocked" in err
    assert "image 0: refunded, seed: 1" in err and "image 1: refunded, seed: 2" in err
    assert not list(tmp_path.iterdir())


def test_cli_ctrl_c_cancels_the_job_and_keeps_what_was_written(
    gateway, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
):
    servicer, address = gateway
    release = threading.Event()

    def generate(request: Any, context: grpc.ServicerContext, attempt: int) -> Iterator[Any]:
        yield completed("job-c", seed=3, image=0)
        yield progress("job-c", 1, 4, image=1)
        release.wait(10)

    def unary(name: str, request: Any, context: grpc.ServicerContext, attempt: int) -> Any:
        release.set()
        return api_pb2.CancelResponse(cancelled=True)

    servicer.generate_script = generate
    servicer.unary_script = unary
    original = cli.commands.ProgressDisplay.show

    def interrupt_on_progress(self: Any, event: talos_sdk.Event) -> None:
        original(self, event)
        if isinstance(event, talos_sdk.Progress):
            raise KeyboardInterrupt

    # Ctrl-C arrives while the second image renders (after the first was written).
    monkeypatch.setattr(cli.commands.ProgressDisplay, "show", interrupt_on_progress)
    try:
        code = _talos(address, "generate", "x", "-n", "2", "-o", str(tmp_path / "o.png"))
    finally:
        release.set()
    err = capsys.readouterr().err
    assert code == cli.EXIT_INTERRUPTED
    assert (tmp_path / "o-0.png").exists() and f"wrote {tmp_path / 'o-0.png'}" in err
    assert "cancelled job job-c" in err
    assert [call[1].job_id for call in servicer.named("Cancel")] == ["job-c"]
