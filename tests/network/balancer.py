"""A TCP load balancer for tests: one address in front of several gateway replicas' relay ports.

Outside render nodes reach the cluster through one load-balanced address, so each node's
stream lands on whichever replica the balancer picked. This one forwards each new connection
to the next backend in turn (round-robin); a backend that refuses a connection (its process
died) is skipped and left out for a while, as a balancer's health check would. It runs on its
own thread and event loop, so the test's blocking calls never stall the bytes it carries.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time


class TcpBalancer:
    DOWN_SECONDS = 2.0

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self.backends: list[str] = []
        self.picks: list[str] = []  # the backend each accepted connection went to, in order
        self._down: dict[str, float] = {}
        self._next = 0
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tcp-balancer", daemon=True)
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> TcpBalancer:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the balancer did not start")
        return self

    def add(self, backend: str) -> None:
        with self._lock:
            self.backends.append(backend)

    def remove(self, backend: str) -> None:
        with self._lock:
            if backend in self.backends:
                self.backends.remove(backend)

    def stop(self) -> None:
        if self._server is not None:
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._accept, self.host, 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    def _candidates(self) -> list[str]:
        with self._lock:
            backends = list(self.backends)
            start = self._next
            self._next += 1
        now = time.monotonic()
        ordered = [backends[(start + i) % len(backends)] for i in range(len(backends))] if backends else []
        up = [b for b in ordered if self._down.get(b, 0.0) <= now]
        return up or ordered

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for backend in self._candidates():
            host, port = backend.rsplit(":", 1)
            try:
                up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 2)
            except (OSError, TimeoutError):
                self._down[backend] = time.monotonic() + self.DOWN_SECONDS
                continue
            self.picks.append(backend)
            task = asyncio.current_task()
            assert task is not None
            self._pipes.add(task)
            try:
                await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
            finally:
                self._pipes.discard(task)
            return
        writer.close()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            # One side ended: end the other, so a dead replica breaks its nodes' streams at once.
            with contextlib.suppress(Exception):
                writer.close()
