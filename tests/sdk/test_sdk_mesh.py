"""The SDK and the ``talos`` command line against the real mesh.

Billing, moderation, the gateway and a render node (built-in test model) run as real
processes (the session ``mesh`` fixture in tests/conftest.py); every account is fresh.
Prompts that must be refused are built from the made-up trigger words of the test rule
file the mesh's moderation service loads, so no test spells an abusive prompt.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

import talos_sdk
from talos.api.v1 import contract
from talos_dev.mesh import Account, LocalMesh

from ..conftest import TEST_RULES

PRICE = contract.PRICE_PER_IMAGE
CLI_TIMEOUT = 120


def _client(mesh: LocalMesh, key: str | None, **kwargs: Any) -> talos_sdk.Client:
    return talos_sdk.Client(key, mesh.grpc_addr, timeout=30, stream_timeout=120, **kwargs)


def _decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def _refused_prompt() -> str:
    """A prompt the test rule file blocks, made of its made-up words (a minor term with a sexual one)."""
    if not TEST_RULES.exists():
        pytest.skip(f"{TEST_RULES} (the made-up trigger words) is not there; the mesh runs the real rules")
    rules = json.loads(TEST_RULES.read_text())
    return f"a picture of a {rules['minor_terms'][0]} that is {rules['sexual_terms'][0]}"


# -- a generation -------------------------------------------------------------------------------


def test_generation_streams_its_events_in_order_and_charges_once(mesh: LocalMesh, account: Account):
    with _client(mesh, account.api_key) as client:
        stream = client.stream("a lighthouse at dusk", steps=4, seed=123, negative_prompt="fog")
        events = list(stream)
        after = client.account()

    kinds = [type(event).__name__ for event in events]
    first_started = kinds.index("Started")
    assert set(kinds[:first_started]) <= {"Queued"}, kinds
    assert kinds[-1] == "Completed" and kinds.count("Started") == 1 and kinds.count("Completed") == 1
    steps = [event.step for event in events if isinstance(event, talos_sdk.Progress)]
    assert steps == sorted(set(steps)) and steps[-1] == 4 and steps[0] >= 1, steps
    assert all(e.total_steps == 4 for e in events if isinstance(e, talos_sdk.Progress))
    assert all(kind == "Progress" for kind in kinds[first_started + 1 : -1]), kinds
    assert len({event.job_id for event in events}) == 1 and stream.job_id == events[0].job_id
    assert {event.image for event in events} == {0}

    done = events[-1]
    assert isinstance(done, talos_sdk.Completed)
    assert done.seed == 123 and done.credits_charged == PRICE and done.output_format == "png"
    assert (done.width, done.height) == (1024, 1024)
    image = _decode(done.data)
    assert image.format == "PNG" and image.size == (1024, 1024)
    assert done.balance == 1000 - PRICE == after.spendable
    assert after.balance == 1000 - PRICE and after.price_per_image == PRICE and not after.age_confirmed


async def test_async_client_generates_with_a_chosen_size_and_format(mesh: LocalMesh, account: Account):
    seen: list[talos_sdk.Event] = []
    async with talos_sdk.AsyncClient(account.api_key, mesh.grpc_addr, timeout=30) as client:
        result = await client.generate_image(
            "a red bicycle in the rain",
            size="832x1216",
            steps=2,
            seed=9,
            output_format="jpeg",
            style="cinematic",
            on_event=seen.append,
        )
        options = await client.options()
        account_after = await client.account()
    assert isinstance(seen[-1], talos_sdk.Completed) and seen[-1] is result
    assert any(isinstance(event, talos_sdk.Progress) for event in seen)
    image = _decode(result.data)
    assert image.format == "JPEG" and image.size == (832, 1216) == (result.width, result.height)
    assert result.seed == 9 and result.credits_charged == PRICE
    assert account_after.balance == 1000 - PRICE
    assert "cinematic" in {style.id for style in options.styles}


def test_submit_watch_and_the_idempotency_key_return_one_job_charged_once(mesh: LocalMesh, account: Account):
    key = f"order-{uuid.uuid4()}"
    with _client(mesh, account.api_key) as client:
        job_id = client.submit("a paper boat", steps=2, seed=77, idempotency_key=key)
        assert client.submit("a paper boat", steps=2, seed=77, idempotency_key=key) == job_id
        with pytest.raises(talos_sdk.IdempotencyConflict):
            client.submit("a different boat", steps=2, seed=77, idempotency_key=key)
        watched = client.watch(job_id).result()
        assert watched.job_id == job_id and [image.seed for image in watched.images] == [77]
        assert client.account().balance == 1000 - PRICE  # charged once
        again = client.generate_image("a paper boat", steps=2, seed=77)
    assert again.job_id != job_id and again.data == watched.images[0].data  # same seed, same picture


# -- several images ------------------------------------------------------------------------------


def _check_images(result: talos_sdk.Generation, first_seed: int, count: int) -> list[bytes]:
    assert [(image.image, image.seed) for image in result.images] == [
        (index, first_seed + index) for index in range(count)
    ]
    assert result.failed == () and result.credits_charged == count * PRICE
    pixels = []
    for image in result.images:
        decoded = _decode(image.data)
        assert decoded.format == "PNG" and decoded.size == (image.width, image.height) == (1024, 1024)
        pixels.append(decoded.tobytes())
    assert len(set(pixels)) == count  # each image has its own seed, so its own picture
    return [image.data for image in result.images]


def test_generate_two_images_each_with_its_own_seed_charged_each(mesh: LocalMesh, account: Account):
    seen: list[talos_sdk.Event] = []
    with _client(mesh, account.api_key) as client:
        result = client.generate("two lighthouses", n=2, steps=2, seed=40, on_event=seen.append)
        after = client.account()
        second_alone = client.generate_image("two lighthouses", steps=2, seed=41)
    _check_images(result, 40, 2)
    assert {event.image for event in seen} == {0, 1} and len({event.job_id for event in seen}) == 1
    for index in (0, 1):
        kinds = [type(event).__name__ for event in seen if event.image == index]
        assert kinds.count("Started") == 1 and kinds[-1] == "Completed", (index, kinds)
    assert isinstance(seen[-1], talos_sdk.Completed) and result.balance == seen[-1].balance
    assert after.balance == 1000 - 2 * PRICE == result.balance
    # Image i of a request is the picture of seed + i asked for alone.
    assert _decode(second_alone.data).tobytes() == _decode(result.images[1].data).tobytes()


def test_submit_and_watch_two_images(mesh: LocalMesh, account: Account):
    with _client(mesh, account.api_key) as client:
        job_id = client.submit("two paper boats", n=2, steps=2, seed=900)
        stream = client.watch(job_id)
        events = list(stream)
        result = stream.result()
        after = client.account()
    assert result.job_id == job_id and {event.job_id for event in events} == {job_id}
    _check_images(result, 900, 2)
    ends = [event for event in events if isinstance(event, talos_sdk.Completed | talos_sdk.Failed)]
    assert sorted(end.image for end in ends) == [0, 1] and ends[-1] is events[-1]
    assert after.balance == 1000 - 2 * PRICE


# -- errors --------------------------------------------------------------------------------------


def test_invalid_requests_raise_invalid_request_naming_the_field(mesh: LocalMesh, account: Account):
    with _client(mesh, account.api_key) as client:
        for kwargs, field in [
            ({"steps": 61}, "steps"),
            ({"style": "watercolour"}, "style"),
            ({"size": "640x480"}, "size"),
            ({"guidance": 25.0}, "guidance"),
        ]:
            with pytest.raises(talos_sdk.InvalidRequest) as caught:
                client.generate_image("a lighthouse", **kwargs)
            assert caught.value.code == "invalid_request"
            assert field in (caught.value.field or caught.value.message), (kwargs, caught.value)
        with pytest.raises(talos_sdk.InvalidRequest):
            client.generate_image("   ")
        assert client.account().balance == 1000


def test_an_unknown_key_raises_authentication_error(mesh: LocalMesh):
    with _client(mesh, "tk_not_a_real_key") as client:
        with pytest.raises(talos_sdk.AuthenticationError) as caught:
            client.account()
        assert caught.value.code == "invalid_api_key"
        with pytest.raises(talos_sdk.AuthenticationError):
            client.generate_image("a lighthouse", steps=1)
        # Options need no key.
        options = client.options()
    assert options.price_per_image == PRICE
    assert {size.id for size in options.sizes} == {"1024x1024", "832x1216", "1216x832"}
    assert options.steps.min == 1 and options.steps.max == 60 and options.steps.default == 30
    assert "photo" in {style.id for style in options.styles}
    assert "png" in options.output_formats


def test_too_few_credits_raise_insufficient_credits_and_charge_nothing(mesh: LocalMesh):
    poor = mesh.create_account(PRICE - 1)
    with _client(mesh, poor.api_key) as client:
        with pytest.raises(talos_sdk.InsufficientCredits) as caught:
            client.generate_image("a lighthouse", steps=1)
        assert caught.value.code == "insufficient_credits"
        assert client.account().balance == PRICE - 1


def test_18_plus_needs_the_age_confirmation_first(mesh: LocalMesh, account: Account):
    with _client(mesh, account.api_key) as client:
        with pytest.raises(talos_sdk.AgeConfirmationRequired) as caught:
            client.generate_image("a lighthouse", steps=1, nsfw=True)
        assert isinstance(caught.value, talos_sdk.PolicyRefusal)
        assert client.account().age_confirmed is False
        assert client.confirm_age() is True
        assert client.account().age_confirmed is True
        result = client.generate_image("a lighthouse", steps=1, nsfw=True)
    assert result.credits_charged == PRICE


def test_a_refused_prompt_raises_content_policy_violation(mesh: LocalMesh, account: Account):
    prompt = _refused_prompt()
    with _client(mesh, account.api_key) as client:
        with pytest.raises(talos_sdk.ContentPolicyViolation) as caught:
            client.generate_image(prompt, steps=1)
        assert prompt not in caught.value.message  # the prompt is never echoed
        assert client.account().balance == 1000


def test_unknown_job_ids_raise_not_found(mesh: LocalMesh, account: Account):
    with _client(mesh, account.api_key) as client:
        with pytest.raises(talos_sdk.NotFound):
            client.cancel(str(uuid.uuid4()))
        with pytest.raises(talos_sdk.NotFound):
            list(client.watch(str(uuid.uuid4())))


# -- cancel -------------------------------------------------------------------------------------


def test_cancel_ends_a_running_job_as_failed_and_refunds_it(mesh: LocalMesh, account: Account):
    with _client(mesh, account.api_key) as client:
        job_id = client.submit("a slow lighthouse", steps=60, size="1216x832")
        # Another account's job id answers not_found, always.
        with _client(mesh, mesh.create_account(100).api_key) as intruder, pytest.raises(talos_sdk.NotFound):
            intruder.cancel(job_id)
        stream = client.watch(job_id)
        cancelled = None
        events: list[talos_sdk.Event] = []
        for event in stream:
            events.append(event)
            if cancelled is None and isinstance(
                event, talos_sdk.Queued | talos_sdk.Started | talos_sdk.Progress
            ):
                cancelled = client.cancel(job_id)
        terminal = events[-1]
        balance = client.account().balance
    assert cancelled is True
    assert isinstance(terminal, talos_sdk.Failed), events
    assert terminal.code == "cancelled" and terminal.refunded
    assert isinstance(terminal.error(), talos_sdk.JobCancelled)
    assert balance == 1000
    with _client(mesh, account.api_key) as client:
        assert client.cancel(job_id) is False  # already over


# -- the command line ----------------------------------------------------------------------------


def _talos(mesh: LocalMesh, key: str | None, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("talos")
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "talos_sdk"]
    env = {k: v for k, v in os.environ.items() if k not in {"TALOS_API_KEY", "TALOS_ADDRESS"}}
    env["TALOS_ADDRESS"] = mesh.grpc_addr
    if key is not None:
        env["TALOS_API_KEY"] = key
    return subprocess.run(
        [*argv, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=CLI_TIMEOUT
    )


def test_cli_generate_writes_a_png_and_prints_seed_and_credits(
    mesh: LocalMesh, account: Account, tmp_path: Path
):
    out = tmp_path / "out.png"
    done = _talos(
        mesh,
        account.api_key,
        "generate",
        "a quiet harbour",
        "-o",
        str(out),
        "--steps",
        "3",
        "--seed",
        "5",
        "--style",
        "photo",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    image = _decode(out.read_bytes())
    assert image.format == "PNG" and image.size == (1024, 1024)
    assert "seed: 5" in done.stdout and f"credits charged: {PRICE}" in done.stdout
    assert f"balance: {1000 - PRICE}" in done.stdout
    assert "step 3/3" in done.stderr  # the progress display
    assert not list(tmp_path.glob("*.part"))

    webp = _talos(
        mesh,
        account.api_key,
        "generate",
        "a quiet harbour",
        "-o",
        str(tmp_path / "o.webp"),
        "--steps",
        "1",
        "--json",
        "-q",
        cwd=tmp_path,
    )
    assert webp.returncode == 0, webp.stderr
    info = json.loads(webp.stdout)
    assert info["credits_charged"] == PRICE and info["refunded"] == [] and webp.stderr == ""
    assert [(i["image"], i["output_format"], i["path"]) for i in info["images"]] == [
        (0, "webp", str(tmp_path / "o.webp"))
    ]
    assert _decode((tmp_path / "o.webp").read_bytes()).format == "WEBP"

    shown = _talos(mesh, account.api_key, "account", "--json", cwd=tmp_path)
    assert shown.returncode == 0 and json.loads(shown.stdout)["balance"] == 1000 - 2 * PRICE
    listed = _talos(mesh, None, "options", cwd=tmp_path)
    assert listed.returncode == 0 and "photo" in listed.stdout and "1216x832" in listed.stdout


def test_cli_writes_two_images_with_their_seeds(mesh: LocalMesh, account: Account, tmp_path: Path):
    out = tmp_path / "pair.png"
    done = _talos(
        mesh, account.api_key, "generate", "two harbours", "-n", "2", "--steps", "2", "--seed", "61",
        "-o", str(out), cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert not out.exists()
    files = [tmp_path / "pair-0.png", tmp_path / "pair-1.png"]
    assert len({_decode(path.read_bytes()).tobytes() for path in files}) == 2
    for index, path in enumerate(files):
        assert f"image {index}: wrote {path} (1024x1024 png), seed: {61 + index}" in done.stdout
    assert f"credits charged: {2 * PRICE}" in done.stdout and f"balance: {1000 - 2 * PRICE}" in done.stdout
    assert "step 4/4 100%" in done.stderr  # the progress display counts the steps of both


def test_cli_exit_codes_tell_failures_apart(mesh: LocalMesh, account: Account, tmp_path: Path):
    out = tmp_path / "never.png"
    cases = [
        (2, None, ["generate", "a lighthouse", "-o", str(out)]),  # no key
        (2, account.api_key, ["generate", "a lighthouse", "-o", str(out), "--steps", "0"]),
        (2, account.api_key, ["generate"]),  # argparse: missing prompt
        (4, "tk_not_a_real_key", ["generate", "a lighthouse", "-o", str(out), "--steps", "1"]),
        (4, mesh.create_account(1).api_key, ["generate", "a lighthouse", "-o", str(out), "--steps", "1"]),
        (3, account.api_key, ["generate", "a lighthouse", "-o", str(out), "--nsfw", "--steps", "1"]),
        (1, account.api_key, ["cancel", str(uuid.uuid4())]),
    ]
    for expected, key, args in cases:
        done = _talos(mesh, key, *args, cwd=tmp_path)
        assert done.returncode == expected, (args, done.returncode, done.stderr)
        assert "Traceback" not in done.stderr
    assert not out.exists()
    if TEST_RULES.exists():
        refused = _talos(mesh, account.api_key, "generate", _refused_prompt(), "-o", str(out), cwd=tmp_path)
        assert refused.returncode == 3, refused.stderr
        assert "content_policy_violation" in refused.stderr


def test_the_example_script_runs(mesh: LocalMesh, account: Account, tmp_path: Path):
    example = Path(__file__).resolve().parents[2] / "sdk" / "examples" / "generate.py"
    env = {**os.environ, "TALOS_API_KEY": account.api_key, "TALOS_ADDRESS": mesh.grpc_addr}
    done = subprocess.run(
        [sys.executable, str(example), "a harbour at dawn", str(tmp_path / "harbour.png")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    assert _decode((tmp_path / "harbour.png").read_bytes()).size == (1216, 832)
    assert "charged 18" in done.stdout
