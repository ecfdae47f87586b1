"""The `openai` package, pointed at the gateway with base_url, generates an image unchanged."""

from __future__ import annotations

import base64
import io

import openai
import pytest
from PIL import Image

from talos_common.mesh import Account, LocalMesh


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
