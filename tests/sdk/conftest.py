"""The scripted gateway of the SDK's own tests (see scripted.py), on a free port."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest

from talos.api.v1 import api_pb2_grpc

from .scripted import ScriptedGateway


@pytest.fixture
def gateway() -> Iterator[tuple[ScriptedGateway, str]]:
    servicer = ScriptedGateway()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    api_pb2_grpc.add_ImageServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield servicer, f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)
