"""Billing as a real process: talos-admin against it, a graceful stop, and a crash (SIGKILL)
in the middle of a stream of reserves and captures that loses nothing and charges nothing twice.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from talos.billing.v1 import billing_pb2, billing_pb2_grpc
from talos_billing import admin as admin_cli
from talos_billing.config import Settings
from talos_billing.rules import HoldState
from talos_billing.store import Store
from talos_dev.procs import ServiceProcess, python_module

TIMEOUT = 10.0
ADMIN = Path(sys.executable).with_name("talos-admin")


def billing_process(data_dir: Path, name: str = "billing", **env: str) -> ServiceProcess:
    return ServiceProcess(
        name,
        python_module("talos_billing"),
        {"TALOS_BILLING_PORT": "0", "TALOS_BILLING_DATA_DIR": str(data_dir), **env},
        data_dir / f"{name}.log",
    )


@pytest.fixture(scope="module")
def billing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    proc = billing_process(tmp_path_factory.mktemp("billing-admin"))
    proc.start(timeout=60)
    try:
        yield proc
    finally:
        proc.stop()


def admin(address: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    assert ADMIN.exists(), f"talos-admin is not installed next to {sys.executable}"
    env = {**os.environ, "TALOS_BILLING_ADDR": address}
    done = subprocess.run([str(ADMIN), *args], env=env, capture_output=True, text=True, timeout=60)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def admin_json(address: str, *args: str) -> dict[str, object]:
    out = admin(address, *args).stdout.strip().splitlines()
    assert len(out) == 1, out  # exactly one line of JSON
    value = json.loads(out[0])
    assert isinstance(value, dict)
    return value


def test_talos_admin_commands(billing: ServiceProcess) -> None:
    address = str(billing.ready["grpc"])
    created = admin_json(address, "create-account", "--credits", "100", "--allowance", "20")
    assert set(created) == {"account_id", "api_key"}
    account_id, api_key = str(created["account_id"]), str(created["api_key"])
    assert api_key.startswith("tls_")

    granted = admin_json(address, "grant", account_id, "50")
    assert granted["balance"] == 150
    changed = admin_json(address, "set-allowance", account_id, "36")
    assert (changed["daily_allowance"], changed["allowance_remaining"]) == (36, 36)
    shown = admin_json(address, "account", account_id)
    assert (shown["account_id"], shown["balance"], shown["price_per_image"]) == (account_id, 150, 18)

    with grpc.insecure_channel(address) as channel:
        stub = billing_pb2_grpc.BillingServiceStub(channel)
        stub.Authenticate(billing_pb2.AuthenticateRequest(api_key=api_key), timeout=TIMEOUT)
        assert admin_json(address, "revoke-key", account_id) == {"account_id": account_id, "revoked": 1}
        with pytest.raises(grpc.RpcError) as caught:
            stub.Authenticate(billing_pb2.AuthenticateRequest(api_key=api_key), timeout=TIMEOUT)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED

        node = admin_json(address, "create-node-token", "--name", "gpu-7")
        assert set(node) == {"node_id", "token"} and str(node["token"]).startswith("tlsn_")
        identity = stub.AuthenticateNode(
            billing_pb2.AuthenticateNodeRequest(token=str(node["token"])), timeout=TIMEOUT
        )
        assert identity.name == "gpu-7"
        assert admin_json(address, "revoke-node-token", str(node["node_id"]))["revoked"] is True
        with pytest.raises(grpc.RpcError):
            stub.AuthenticateNode(
                billing_pb2.AuthenticateNodeRequest(token=str(node["token"])), timeout=TIMEOUT
            )

    # Keys and tokens are printed once by talos-admin and never logged by billing.
    log_text = billing.log_path.read_text()
    assert api_key not in log_text and str(node["token"]) not in log_text
    assert account_id in log_text


def test_talos_admin_errors(billing: ServiceProcess, tmp_path: Path) -> None:
    address = str(billing.ready["grpc"])
    missing = admin(address, "grant", "acc_does_not_exist", "5", check=False)
    assert missing.returncode == 1 and "not_found" in missing.stderr and missing.stdout == ""
    bad = admin(address, "grant", "acc_x", "-5", check=False)
    assert bad.returncode == 2
    # Nothing listening: a clear message, not a hang (the call has a deadline).
    started = time.monotonic()
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    down = admin(f"127.0.0.1:{closed_port}", "--timeout", "2", "account", "acc_x", check=False)
    assert down.returncode == 1 and "TALOS_BILLING_ADDR" in down.stderr
    assert time.monotonic() - started < 30


@pytest.mark.parametrize(
    ("argv", "explained"),
    [
        (["grant", "acc_x", "lots"], "argument credits: 'lots' is not a whole number"),
        (["grant", "acc_x", "0"], "argument credits: must be positive"),
        (["create-account", "--credits", "-1"], "argument --credits: must be zero or more"),
    ],
)
def test_talos_admin_explains_a_bad_number(
    argv: list[str], explained: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:  # argparse refuses before any call is made
        admin_cli.main(argv)
    assert caught.value.code == 2
    assert explained in capsys.readouterr().err


def test_sigterm_drains_and_exits_cleanly(tmp_path: Path) -> None:
    proc = billing_process(tmp_path)
    ready = proc.start(timeout=60)
    assert ready["service"] == "billing"
    with grpc.insecure_channel(str(ready["grpc"])) as channel:
        stub = billing_pb2_grpc.BillingServiceStub(channel)
        account = stub.CreateAccount(billing_pb2.CreateAccountRequest(credits=36), timeout=TIMEOUT)
        stub.Reserve(billing_pb2.ReserveRequest(job_id="t-1", account_id=account.account_id), timeout=TIMEOUT)
    assert proc.stop() == 0
    assert '"msg": "stopped"' in proc.log_path.read_text()


class CrashClient:
    """Reserves and captures a stream of jobs; when billing is down it retries the same call."""

    def __init__(self, address: str, account_id: str) -> None:
        self.address = address
        self.account_id = account_id
        self.completed = 0
        self.retries = 0
        self.lock = threading.Lock()

    def call(self, method: str, request: object) -> object:
        deadline = time.monotonic() + 90
        while True:
            with grpc.insecure_channel(self.address) as channel:
                stub = billing_pb2_grpc.BillingServiceStub(channel)
                try:
                    return getattr(stub, method)(request, timeout=5)
                except grpc.RpcError as error:
                    if error.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                        raise
            with self.lock:
                self.retries += 1
            if time.monotonic() > deadline:
                raise TimeoutError(f"{method} kept failing")
            time.sleep(0.05)

    def run(self, jobs: list[str]) -> None:
        for job_id in jobs:
            reserved = self.call(
                "Reserve", billing_pb2.ReserveRequest(job_id=job_id, account_id=self.account_id)
            )
            assert reserved.hold.job_id == job_id  # type: ignore[attr-defined]
            captured = self.call("Capture", billing_pb2.CaptureRequest(job_id=job_id))
            assert captured.hold.state == billing_pb2.HOLD_STATE_CAPTURED  # type: ignore[attr-defined]
            with self.lock:
                self.completed += 1


def test_crash_mid_stream_loses_nothing_and_charges_nothing_twice(tmp_path: Path) -> None:
    proc = billing_process(tmp_path, name="billing-crash")
    ready = proc.start(timeout=60)
    address = str(ready["grpc"])
    with grpc.insecure_channel(address) as channel:
        stub = billing_pb2_grpc.BillingServiceStub(channel)
        account = stub.CreateAccount(billing_pb2.CreateAccountRequest(credits=10_000), timeout=TIMEOUT)
    client = CrashClient(address, account.account_id)
    streams = [[f"crash-{s}-{j}" for j in range(20)] for s in range(4)]
    threads = [threading.Thread(target=client.run, args=(jobs,)) for jobs in streams]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 60
        while client.completed < 15 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert client.completed >= 15, "the stream did not get going"
        proc.kill()  # SIGKILL with calls in flight
        killed_at = client.completed
        # Restart on the same file and the same port, as a supervisor would.
        port = address.rsplit(":", 1)[1]
        proc = billing_process(tmp_path, name="billing-crash", TALOS_BILLING_PORT=port)
        proc.start(timeout=60)
        for thread in threads:
            thread.join(timeout=120)
        assert not any(thread.is_alive() for thread in threads)
    finally:
        proc.stop()
    total = sum(len(jobs) for jobs in streams)
    assert client.completed == total and killed_at < total
    assert client.retries > 0  # calls really did hit the dead billing

    async def books() -> None:
        store = await Store.open(Settings(data_dir=tmp_path), migrate=False)
        try:
            account_state = await store.get_account(account.account_id)
            assert account_state.balance == 10_000 - 18 * total  # every image charged exactly once
            for jobs in streams:
                for job_id in jobs:
                    hold = await store.hold(job_id)
                    assert hold is not None and hold.state == HoldState.CAPTURED
                    entries = await store.ledger_entries(job_id=job_id)
                    assert sorted({e["txn"] for e in entries}) == [f"capture:{job_id}", f"reserve:{job_id}"]
                    assert sum(e["amount"] for e in entries) == 0
            report = await store.audit()
            assert report.ok, report.problems
            assert report.revenue == 18 * total and report.held == 0
        finally:
            await store.close()

    asyncio.run(books())
