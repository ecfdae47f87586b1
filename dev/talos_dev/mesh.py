"""The whole TALOS mesh on loopback: billing, moderation, the gateway and render nodes.

``python -m talos_dev.mesh up`` (what ``make up`` runs) starts every service as a real
process on its configured ports, creates the demo account and a node token, prints the
page's address and the demo key, and stops everything cleanly on Ctrl-C or SIGTERM. The
test suite starts the same mesh on port 0 through :class:`LocalMesh`.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from talos.billing.v1 import billing_pb2, billing_pb2_grpc
from talos_dev.procs import ServiceProcess, python_module

DEMO_CREDITS = 1000
CALL_TIMEOUT = 10.0


@dataclass(frozen=True)
class Account:
    account_id: str
    api_key: str


class LocalMesh:
    """Starts and supervises the four services; every address is learned, never assumed."""

    def __init__(
        self,
        data_dir: Path,
        *,
        ports: Mapping[str, int] | None = None,
        env: Mapping[str, str] | None = None,
        billing_env: Mapping[str, str] | None = None,
        moderation_env: Mapping[str, str] | None = None,
        gateway_env: Mapping[str, str] | None = None,
        render_env: Mapping[str, str] | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.log_dir = self.data_dir / "logs"
        ports = dict(ports or {})
        self.host = host
        self._ports = {
            "billing": ports.get("billing", 0),
            "moderation": ports.get("moderation", 0),
            "http": ports.get("http", 0),
            "grpc": ports.get("grpc", 0),
            "relay": ports.get("relay", 0),
        }
        self._env = dict(env or {})
        self._billing_env = dict(billing_env or {})
        self._moderation_env = dict(moderation_env or {})
        self._gateway_env = dict(gateway_env or {})
        self._render_env = dict(render_env or {})
        self.billing: ServiceProcess | None = None
        self.moderation: ServiceProcess | None = None
        self.gateway: ServiceProcess | None = None
        self.nodes: list[ServiceProcess] = []
        self._channel: grpc.Channel | None = None
        self._node_count = 0

    # -- addresses ---------------------------------------------------------------------
    @property
    def billing_addr(self) -> str:
        assert self.billing is not None
        return str(self.billing.ready["grpc"])

    @property
    def moderation_addr(self) -> str:
        assert self.moderation is not None
        return str(self.moderation.ready["grpc"])

    @property
    def http_url(self) -> str:
        assert self.gateway is not None
        return str(self.gateway.ready["http"])

    @property
    def grpc_addr(self) -> str:
        assert self.gateway is not None
        return str(self.gateway.ready["grpc"])

    @property
    def relay_addr(self) -> str:
        assert self.gateway is not None
        return str(self.gateway.ready["relay"])

    # -- processes -----------------------------------------------------------------------
    def _service(self, name: str, module: str, env: Mapping[str, str]) -> ServiceProcess:
        return ServiceProcess(name, python_module(module), {**self._env, **env}, self.log_dir / f"{name}.log")

    def billing_env(self) -> dict[str, str]:
        return {
            "TALOS_BILLING_HOST": self.host,
            "TALOS_BILLING_PORT": str(self._ports["billing"]),
            "TALOS_BILLING_DATA_DIR": str(self.data_dir),
            **self._billing_env,
        }

    def start_billing(self) -> ServiceProcess:
        self.billing = self._service("billing", "talos_billing", self.billing_env())
        self.billing.start()
        # Restarts keep the learned port, so clients and the gateway find billing again.
        self._ports["billing"] = int(self.billing_addr.rsplit(":", 1)[1])
        self._channel = None
        return self.billing

    def start_moderation(self) -> ServiceProcess:
        env = {
            "TALOS_MODERATION_HOST": self.host,
            "TALOS_MODERATION_PORT": str(self._ports["moderation"]),
            **self._moderation_env,
        }
        self.moderation = self._service("moderation", "talos_moderation", env)
        self.moderation.start()
        self._ports["moderation"] = int(self.moderation_addr.rsplit(":", 1)[1])
        return self.moderation

    def start_gateway(self) -> ServiceProcess:
        env = {
            "TALOS_GATEWAY_HOST": self.host,
            "TALOS_GATEWAY_HTTP_PORT": str(self._ports["http"]),
            "TALOS_GATEWAY_GRPC_PORT": str(self._ports["grpc"]),
            "TALOS_GATEWAY_RELAY_PORT": str(self._ports["relay"]),
            "TALOS_GATEWAY_BILLING_ADDR": self.billing_addr,
            "TALOS_GATEWAY_MODERATION_ADDR": self.moderation_addr,
            **self._gateway_env,
        }
        self.gateway = self._service("gateway", "talos_gateway", env)
        self.gateway.start()
        for key, name in (("http", "http"), ("grpc", "grpc"), ("relay", "relay")):
            self._ports[key] = int(str(self.gateway.ready[name]).rsplit(":", 1)[1])
        return self.gateway

    def add_node(self, env: Mapping[str, str] | None = None, *, wait: bool = True) -> ServiceProcess:
        """Starts one render node with a fresh node token and waits until the relay sees it."""
        token = self.create_node_token(f"local-{self._node_count}")
        self._node_count += 1
        before = self.readiness().get("nodes_connected", 0) if wait else 0
        node_env = {
            "TALOS_RENDER_RELAY": self.relay_addr,
            "TALOS_RENDER_TOKEN": token,
            "TALOS_RENDER_MODEL": "builtin",
            "TALOS_RENDER_DATA_DIR": str(self.data_dir),
            "TALOS_RENDER_HEALTH_HOST": self.host,
            "TALOS_RENDER_HEALTH_PORT": "0",
            "TALOS_RENDER_METRICS_PORT": "0",
            **self._render_env,
            **(env or {}),
        }
        node = self._service(f"render-{self._node_count - 1}", "talos_render", node_env)
        node.start(timeout=300)
        self.nodes.append(node)
        if wait:
            self.wait_for_nodes(before + 1)
        return node

    def start(self, nodes: int = 1) -> LocalMesh:
        self.start_billing()
        self.start_moderation()
        self.start_gateway()
        for _ in range(nodes):
            self.add_node()
        return self

    def restart(self, proc: ServiceProcess) -> ServiceProcess:
        """Starts a stopped or killed service again on the ports it had, as a supervisor would."""
        if proc is self.billing:
            return self.start_billing()
        if proc is self.moderation:
            return self.start_moderation()
        if proc is self.gateway:
            return self.start_gateway()
        proc.start(timeout=300)
        return proc

    def stop(self) -> None:
        for proc in [*self.nodes, self.gateway, self.moderation, self.billing]:
            if proc is not None:
                proc.stop()
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    # -- gateway state ---------------------------------------------------------------------
    def readiness(self) -> dict[str, Any]:
        try:
            with urllib.request.urlopen(self.http_url + "/readyz", timeout=5) as response:
                return dict(json.loads(response.read()))
        except urllib.error.HTTPError as error:
            return dict(json.loads(error.read() or b"{}"))

    def wait_for_nodes(self, count: int, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.readiness().get("nodes_connected", 0) >= count:
                return
            time.sleep(0.05)
        raise TimeoutError(f"the relay did not see {count} render node(s) within {timeout:.0f}s")

    # -- billing -----------------------------------------------------------------------
    def billing_stub(self) -> billing_pb2_grpc.BillingServiceStub:
        if self._channel is None:
            self._channel = grpc.insecure_channel(self.billing_addr)
        return billing_pb2_grpc.BillingServiceStub(self._channel)

    def create_account(self, credits: int = DEMO_CREDITS, allowance: int = 0) -> Account:
        reply = self.billing_stub().CreateAccount(
            billing_pb2.CreateAccountRequest(credits=credits, daily_allowance=allowance),
            timeout=CALL_TIMEOUT,
        )
        return Account(reply.account_id, reply.api_key)

    def create_node_token(self, name: str) -> str:
        reply = self.billing_stub().CreateNodeToken(
            billing_pb2.CreateNodeTokenRequest(name=name), timeout=CALL_TIMEOUT
        )
        return str(reply.token)

    def account(self, account_id: str) -> billing_pb2.AccountState:
        return self.billing_stub().GetAccount(
            billing_pb2.GetAccountRequest(account_id=account_id), timeout=CALL_TIMEOUT
        )

    def demo_account(self) -> Account:
        """The demo account kept across runs (its id in var/, never its key); a fresh key each run."""
        record = self.data_dir / "demo-account.json"
        if record.exists():
            account_id = json.loads(record.read_text())["account_id"]
            try:
                reply = self.billing_stub().CreateApiKey(
                    billing_pb2.CreateApiKeyRequest(account_id=account_id), timeout=CALL_TIMEOUT
                )
                return Account(account_id, reply.api_key)
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.NOT_FOUND:
                    raise
        account = self.create_account(DEMO_CREDITS)
        record.write_text(json.dumps({"account_id": account.account_id}) + "\n")
        return account


def _default_ports(environ: Mapping[str, str]) -> dict[str, int]:
    def port(name: str, default: int) -> int:
        return int(environ.get(name, default))

    return {
        "billing": port("TALOS_BILLING_PORT", 50061),
        "moderation": port("TALOS_MODERATION_PORT", 50062),
        "http": port("TALOS_GATEWAY_HTTP_PORT", 8080),
        "grpc": port("TALOS_GATEWAY_GRPC_PORT", 50051),
        "relay": port("TALOS_GATEWAY_RELAY_PORT", 50052),
    }


def up(data_dir: Path) -> int:
    data_dir.mkdir(parents=True, exist_ok=True)
    mesh = LocalMesh(
        data_dir,
        ports=_default_ports(os.environ),
        host=os.environ.get("TALOS_HOST", "127.0.0.1"),
        render_env={
            "TALOS_RENDER_HEALTH_PORT": os.environ.get("TALOS_RENDER_HEALTH_PORT", "50071"),
            "TALOS_RENDER_METRICS_PORT": os.environ.get("TALOS_RENDER_METRICS_PORT", "9471"),
        },
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        print("Starting billing, moderation, the gateway and one render node ...", flush=True)
        mesh.start_billing()
        mesh.start_moderation()
        mesh.start_gateway()
        account = mesh.demo_account()
        mesh.add_node()
        print(f"TALOS gateway: {mesh.http_url}/create")
        print(f"Demo API key: {account.api_key}")
        print(f"Relay: {mesh.relay_addr}")
        print(f"Logs: {mesh.log_dir}  (Ctrl-C stops everything)", flush=True)
        while not stop.wait(1.0):
            for proc in [mesh.billing, mesh.moderation, mesh.gateway, *mesh.nodes]:
                if proc is not None and not proc.alive():
                    print(f"{proc.name} exited; see {proc.log_path}", file=sys.stderr)
                    stop.set()
        return 0
    except Exception as error:
        print(f"make up failed: {error}", file=sys.stderr)
        return 1
    finally:
        mesh.stop()
        print("TALOS stopped.", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m talos_dev.mesh")
    parser.add_argument("command", choices=["up"])
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("TALOS_DATA_DIR", "var")))
    args = parser.parse_args(argv)
    return up(args.data_dir)


if __name__ == "__main__":
    raise SystemExit(main())
