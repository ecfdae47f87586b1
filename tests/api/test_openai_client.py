"""The `openai` package, pointed at the gateway with base_url, generates images unchanged.

Against the multi-process mesh with the real render node: the pictures here are real renders,
so the encoder quality and the previews the stream sends are the node's own.
"""

from __future__ import annotations

import base64
import io

import openai
import pytest
from PIL import Image

from talos_dev.mesh import Account, LocalMesh


@pytest.fixture(scope="module")
def mesh(process_mesh: LocalMesh) -> LocalMesh:
    return process_mesh


def test_openai_images_generate(mesh: LocalMesh, account: Account) -> None:
    client = openai.OpenAI(
        base_url=mesh.http_url + "/v1", api_key=account.api_key, max_retries=0, timeout=120
    )
    result = client.images.generate(
        prompt="a lighthouse at dusk", size="1024x1024", response_format="b64_json"
    )
    assert result.data is not None and len(result.data) == 1
    b64 = result.data[0].b64_json
    assert b64
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    assert (image.format, image.size) == ("PNG", (1024, 1024))
    assert mesh.account(account.account_id).balance == 1000 - 18


def test_openai_errors_surface_as_openai_exceptions(mesh: LocalMesh, account: Account) -> None:
    client = openai.OpenAI(base_url=mesh.http_url + "/v1", api_key="tk_wrong", max_retries=0, timeout=30)
    with pytest.raises(openai.AuthenticationError):
        client.images.generate(prompt="x", size="1024x1024", response_format="b64_json")
    good = openai.OpenAI(base_url=mesh.http_url + "/v1", api_key=account.api_key, max_retries=0, timeout=30)
    with pytest.raises(openai.BadRequestError) as caught:
        good.images.generate(prompt="x", size="1024x1024", response_format="url")
    assert "response_format" in str(caught.value)
    assert mesh.account(account.account_id).balance == 1000


def _client(mesh: LocalMesh, account: Account) -> openai.OpenAI:
    return openai.OpenAI(base_url=mesh.http_url + "/v1", api_key=account.api_key, max_retries=0, timeout=300)


def _decoded(b64: str | None) -> Image.Image:
    assert b64
    return Image.open(io.BytesIO(base64.b64decode(b64)))


FAST = {"steps": 2}


def test_openai_several_images_per_request(mesh: LocalMesh, account: Account) -> None:
    client = _client(mesh, account)
    two = client.images.generate(prompt="two lighthouses", n=2, size="1024x1024", extra_body=FAST)
    assert two.data is not None and len(two.data) == 2
    assert {_decoded(item.b64_json).size for item in two.data} == {(1024, 1024)}
    four = client.images.generate(prompt="four portraits of a cat", n=4, size="832x1216", extra_body=FAST)
    assert four.data is not None and len(four.data) == 4
    for item in four.data:
        assert _decoded(item.b64_json).size == (832, 1216)
    assert mesh.account(account.account_id).balance == 1000 - 6 * 18


def test_openai_parameters_are_mapped(mesh: LocalMesh, account: Account) -> None:
    client = _client(mesh, account)
    high = client.images.generate(prompt="a field of poppies", quality="high", size="1216x832")
    assert high.data is not None and _decoded(high.data[0].b64_json).size == (1216, 832)
    assert high.quality == "high"
    webp = client.images.generate(
        prompt="a quiet street", output_format="webp", output_compression=50, extra_body=FAST
    )
    assert webp.data is not None and _decoded(webp.data[0].b64_json).format == "WEBP"
    # output_compression is the encoder's quality: the same picture, smaller at a lower one.
    low, fine = (
        client.images.generate(
            prompt="a quiet street",
            output_format="jpeg",
            output_compression=level,
            extra_body={**FAST, "seed": 5},
        )
        for level in (10, 95)
    )
    assert low.data is not None and fine.data is not None
    assert len(base64.b64decode(low.data[0].b64_json or "")) < len(
        base64.b64decode(fine.data[0].b64_json or "")
    )
    auto = client.images.generate(prompt="a red door", size="auto", extra_body=FAST)
    assert auto.data is not None and _decoded(auto.data[0].b64_json).size == (1024, 1024)
    plain = client.images.generate(
        prompt="a blue boat", moderation="auto", background="auto", extra_body=FAST
    )
    assert plain.data is not None and _decoded(plain.data[0].b64_json).format == "PNG"
    assert mesh.account(account.account_id).balance == 1000 - 6 * 18


def test_openai_refusals_name_the_field_and_the_accepted_values(mesh: LocalMesh, account: Account) -> None:
    client = _client(mesh, account)
    for kwargs, field, accepted in (
        ({"background": "transparent"}, "background", "auto or opaque"),
        ({"style": "gritty"}, "style", "natural, vivid"),
        ({"quality": "ultra"}, "quality", "low, medium"),
        ({"n": 5}, "n", "between 1 and 4"),
        ({"output_format": "png", "output_compression": 80}, "output_compression", "webp and jpeg"),
        ({"size": "512x512"}, "size", "1024x1024, 832x1216"),
    ):
        with pytest.raises(openai.BadRequestError) as caught:
            client.images.generate(prompt="a lamp", **kwargs)  # type: ignore[arg-type]
        assert f"'{field}'" in str(caught.value) and accepted in str(caught.value), caught.value
    assert mesh.account(account.account_id).balance == 1000


def test_openai_streaming_sends_partial_then_one_completed_per_image(
    mesh: LocalMesh, account: Account
) -> None:
    client = _client(mesh, account)
    stream = client.images.generate(
        prompt="a windmill at dawn", n=2, quality="low", stream=True, partial_images=2
    )
    kinds: list[str] = []
    for event in stream:
        kinds.append(event.type)
        if event.type == "image_generation.partial_image":
            assert _decoded(event.b64_json).format == "JPEG"
        elif event.type == "image_generation.completed":
            assert _decoded(event.b64_json).size == (1024, 1024)
            assert event.output_format == "png" and event.size == "1024x1024"
    assert kinds.count("image_generation.completed") == 2
    assert 1 <= kinds.count("image_generation.partial_image") <= 4
    assert kinds.index("image_generation.partial_image") < kinds.index("image_generation.completed")
    assert mesh.account(account.account_id).balance == 1000 - 2 * 18
