"""The one shape of every TALOS service process.

Each service package has ``create_server(settings)``, which builds everything and binds its
listeners (ports may be 0) and returns a :class:`Service`: its main gRPC ``server``, the
bound ``port``, every address it listens on, and ``start()``/``stop()``. ``python -m`` of the
package calls :func:`main`, which reads the typed settings once, turns a bad setting or a
port in use into one line naming the variable and exit code 2, starts the service, prints
``TALOS_READY {addresses}`` and drains on SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import grpc

from talos_common import logs
from talos_common.server import PortInUse, announce_ready, stop_signals
from talos_common.settings import SettingsError, load

EXIT_USAGE = 2
S = TypeVar("S")


class CannotStart(RuntimeError):
    """Something the service needs at start is missing (its message names the setting)."""


class Service(Protocol):
    """A service built and bound by its ``create_server``, not yet serving."""

    server: grpc.aio.Server
    port: int

    @property
    def addresses(self) -> dict[str, str]:
        """What TALOS_READY reports: every listener's real address (and anything else worth knowing)."""
        ...

    async def start(self) -> None:
        """Begins serving on the bound listeners."""
        ...

    async def stop(self) -> None:
        """Stops accepting, lets work in flight finish within the service's grace, closes."""
        ...


def fail(program: str, message: str) -> None:
    """The one-line way every TALOS program refuses to start."""
    print(f"{program}: {message}", file=sys.stderr)
    sys.exit(EXIT_USAGE)


def load_settings(program: str, settings_class: type[S], prefix: str) -> S:
    try:
        return load(settings_class, prefix)
    except SettingsError as error:
        fail(program, str(error))
        raise AssertionError("unreachable") from None


async def serve(name: str, service: Service) -> None:
    """Starts a created service, announces it, and drains it on SIGTERM or SIGINT."""
    async with stop_signals() as stop:
        await service.start()
        announce_ready(name, **service.addresses)
        await stop.wait()
    await service.stop()


def main(
    name: str,
    settings_class: type[S],
    prefix: str,
    create_server: Callable[[S], Awaitable[Any]],
    settings: S | None = None,
) -> None:
    """``python -m talos_<name>``: settings, logs, create, serve; exit 0 after a clean drain."""
    program = f"talos-{name}"
    if settings is None:
        settings = load_settings(program, settings_class, prefix)
    logs.configure(name, str(getattr(settings, "log_level", "info")))

    async def run() -> None:
        service = await create_server(settings)
        await serve(name, service)

    try:
        asyncio.run(run())
    except (PortInUse, CannotStart) as error:
        fail(program, str(error))
    except KeyboardInterrupt:
        pass
    sys.exit(0)
