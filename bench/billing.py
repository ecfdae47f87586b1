"""Billing benchmark: reserve+capture pairs per second with 16 concurrent gRPC clients.

Billing runs as a real process (``python -m talos_billing``) on SQLite and on PostgreSQL;
each client is its own gRPC channel, its own account, and loops Reserve then Capture with
fresh job ids. In the same run, ``pgbench -N`` (simple-update) measures the same
PostgreSQL with the same number of clients, just before and just after billing's run on it.
The last line printed is ``ratio N.NN`` = PostgreSQL pairs/s ÷ pgbench tps (the mean of
the two pgbench runs; target: at least 0.50).

Each store's line also times ActiveNodes with the most node ids one call may carry (a few
of them live), as a gateway asks it every few seconds: p50 per call and billing's CPU.

The ``grpc ceiling`` line just before it runs the same driver (same clients, seconds and
warm-up) against a no-op BillingService in a child process of this script: a real
``grpc.aio`` server built with ``talos_common.server.build_server`` (so it carries the
same error interceptor, health and reflection as billing), whose Reserve and Capture
answer a well-formed ``ReserveResponse``/``CaptureResponse`` of the real shape (Capture's
hold is ``HOLD_STATE_CAPTURED``) without any ledger work: no store, no database, no lock.
Its pairs/s is the most any Python gRPC billing process could reach on this machine with
these clients if the ledger cost nothing, and its ratio the best ``ratio`` billing could
show here; the server and client CPU per pair say where that ceiling comes from (on a
small machine, the Python gRPC stacks of both sides share the same cores as PostgreSQL's
benchmark did not have to). ``--skip-ceiling`` leaves it out.

    .venv/bin/python bench/billing.py [--seconds 10] [--clients 16] [--skip-ceiling]

PostgreSQL: ``--dsn`` (default ``$TALOS_BENCH_POSTGRES`` or postgresql://postgres@127.0.0.1:5432/test);
billing uses a fresh schema there and drops it afterwards. pgbench uses its own database
(``--pgbench-db``, created and initialised when missing).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import sqlalchemy
from google.protobuf.timestamp_pb2 import Timestamp

from talos.billing.v1 import billing_pb2, billing_pb2_grpc
from talos_billing.config import Settings
from talos_billing.limits import MAX_ACTIVE_NODES
from talos_billing.servicer import SERVICE_NAME
from talos_billing.store import Store
from talos_common import server as talos_server
from talos_dev.procs import ServiceProcess, python_module

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
CALL_TIMEOUT = 10.0


@dataclass
class StoreResult:
    store: str
    pairs: int
    seconds: float
    server_cpu_seconds: float
    client_cpu_seconds: float
    p50_ms: float
    p99_ms: float
    ledger: dict[str, Any]
    # ActiveNodes with the most node ids a call may carry, after the pairs' window.
    active_nodes_p50_ms: float
    active_nodes_cpu_ms: float

    @property
    def rate(self) -> float:
        return self.pairs / self.seconds


def _cpu_seconds(pid: int) -> float:
    """User+system CPU of a process, all its threads (0 when there is no such process)."""
    if pid <= 0:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Window:
    """What happened in the measured window (after the warm-up)."""

    pairs: int
    seconds: float
    latencies: list[float]
    server_cpu: float
    client_cpu: float


async def _drive(address: str, clients: int, seconds: float, warmup: float, server_pid: int) -> Window:
    channels = [grpc.aio.insecure_channel(address) for _ in range(clients)]
    stubs = [billing_pb2_grpc.BillingServiceStub(channel) for channel in channels]
    account_ids = []
    for stub in stubs:
        reply = await stub.CreateAccount(
            billing_pb2.CreateAccountRequest(credits=10**11), timeout=CALL_TIMEOUT
        )
        account_ids.append(reply.account_id)
    run_id = secrets.token_hex(4)
    counting = False
    stop = False
    pairs = 0
    latencies: list[float] = []

    async def client(index: int) -> None:
        nonlocal pairs
        stub, account_id = stubs[index], account_ids[index]
        n = 0
        while not stop:
            job_id = f"bench-{run_id}-{index}-{n}"
            n += 1
            started = time.perf_counter()
            await stub.Reserve(
                billing_pb2.ReserveRequest(job_id=job_id, account_id=account_id), timeout=CALL_TIMEOUT
            )
            reply = await stub.Capture(billing_pb2.CaptureRequest(job_id=job_id), timeout=CALL_TIMEOUT)
            if reply.hold.state != billing_pb2.HOLD_STATE_CAPTURED:
                raise RuntimeError(f"capture of {job_id} answered {reply.hold.state}")
            if counting:
                pairs += 1
                latencies.append(time.perf_counter() - started)

    tasks = [asyncio.create_task(client(i)) for i in range(clients)]
    await asyncio.sleep(warmup)
    server_before, client_before = _cpu_seconds(server_pid), time.process_time()
    counting = True
    began = time.perf_counter()
    await asyncio.sleep(seconds)
    counting = False
    elapsed = time.perf_counter() - began
    server_cpu = _cpu_seconds(server_pid) - server_before
    client_cpu = time.process_time() - client_before
    stop = True
    await asyncio.gather(*tasks)
    for channel in channels:
        await channel.close()
    return Window(pairs, elapsed, latencies, server_cpu, client_cpu)


async def _active_nodes(address: str, server_pid: int, calls: int = 30) -> tuple[float, float]:
    """ActiveNodes as a gateway asks it: every connected node id at once (the limit, 10,000,
    a few of them live). Returns (p50 ms per call, billing CPU ms per call)."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = billing_pb2_grpc.BillingServiceStub(channel)
        live = [
            (await stub.CreateNodeToken(billing_pb2.CreateNodeTokenRequest(), timeout=CALL_TIMEOUT)).node_id
            for _ in range(100)
        ]
        asked = billing_pb2.ActiveNodesRequest(
            node_ids=live + [f"node_{n:016x}" for n in range(MAX_ACTIVE_NODES - len(live))]
        )
        latencies = []
        cpu_before = _cpu_seconds(server_pid)
        for _ in range(calls):
            started = time.perf_counter()
            reply = await stub.ActiveNodes(asked, timeout=CALL_TIMEOUT)
            latencies.append(time.perf_counter() - started)
            if len(reply.active_node_ids) != len(live):
                raise RuntimeError(
                    f"ActiveNodes answered {len(reply.active_node_ids)} of {len(live)} live nodes"
                )
        cpu = _cpu_seconds(server_pid) - cpu_before
    return _percentile(latencies, 0.5), cpu / calls * 1000


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else 0.0


def run_store(name: str, env: dict[str, str], workdir: Path, clients: int, seconds: float) -> StoreResult:
    proc = ServiceProcess(
        f"billing-{name}",
        python_module("talos_billing"),
        {"TALOS_BILLING_PORT": "0", "TALOS_BILLING_LOG_LEVEL": "info", **env},
        workdir / f"billing-{name}.log",
    )
    ready = proc.start(timeout=60)
    try:
        window = asyncio.run(_drive(ready["grpc"], clients, seconds, warmup=1.5, server_pid=proc.pid))
        active_p50_ms, active_cpu_ms = asyncio.run(_active_nodes(ready["grpc"], proc.pid))
    finally:
        proc.stop()
    return StoreResult(
        name,
        window.pairs,
        window.seconds,
        window.server_cpu,
        window.client_cpu,
        _percentile(window.latencies, 0.5),
        _percentile(window.latencies, 0.99),
        _ledger_stats(proc),
        active_p50_ms,
        active_cpu_ms,
    )


class NoopBilling(billing_pb2_grpc.BillingServiceServicer):
    """Answers CreateAccount, Reserve and Capture at once, in the real replies' shape, with no ledger."""

    @staticmethod
    def _hold(job_id: str, account_id: str, state: billing_pb2.HoldState) -> billing_pb2.Hold:
        return billing_pb2.Hold(
            job_id=job_id,
            account_id=account_id,
            amount=1,
            from_balance=1,
            state=state,
            expires_at=Timestamp(seconds=int(time.time()) + 600),
        )

    @staticmethod
    def _account(account_id: str) -> billing_pb2.AccountState:
        return billing_pb2.AccountState(
            account_id=account_id,
            balance=10**11,
            allowance_resets_at=Timestamp(seconds=int(time.time()) + 86_400),
            price_per_image=1,
        )

    async def CreateAccount(
        self, request: billing_pb2.CreateAccountRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.CreateAccountResponse:
        return billing_pb2.CreateAccountResponse(account_id=f"noop-{secrets.token_hex(8)}", api_key="noop")

    async def Reserve(
        self, request: billing_pb2.ReserveRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.ReserveResponse:
        return billing_pb2.ReserveResponse(
            hold=self._hold(request.job_id, request.account_id, billing_pb2.HOLD_STATE_HELD),
            account=self._account(request.account_id),
        )

    async def Capture(
        self, request: billing_pb2.CaptureRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.CaptureResponse:
        return billing_pb2.CaptureResponse(
            hold=self._hold(request.job_id, "", billing_pb2.HOLD_STATE_CAPTURED),
            account=self._account(""),
        )


async def _serve_noop() -> None:
    """The child of ``--noop-server``: listens on 127.0.0.1 port 0, announces it, serves until SIGTERM."""
    servicer = NoopBilling()
    grpc_server, health_servicer = talos_server.build_server(
        register=[lambda s: billing_pb2_grpc.add_BillingServiceServicer_to_server(servicer, s)],
        service_names=[SERVICE_NAME],
    )
    async with talos_server.stop_signals() as stop:
        port = talos_server.bind(grpc_server, "127.0.0.1", 0)
        await grpc_server.start()
        await talos_server.set_serving(health_servicer, [SERVICE_NAME], True)
        talos_server.announce_ready("billing-noop", grpc=f"127.0.0.1:{port}")
        await stop.wait()
        await grpc_server.stop(1.0)


def run_ceiling(workdir: Path, clients: int, seconds: float) -> Window:
    """The same driver against :class:`NoopBilling` in a child process (always stopped)."""
    proc = ServiceProcess(
        "billing-noop",
        [sys.executable, str(Path(__file__).resolve()), "--noop-server"],
        {},
        workdir / "billing-noop.log",
    )
    try:
        ready = proc.start(timeout=60)
        return asyncio.run(_drive(ready["grpc"], clients, seconds, warmup=1.5, server_pid=proc.pid))
    finally:
        proc.stop()


def _ceiling_report(window: Window, tps: float) -> str:
    rate = window.pairs / window.seconds
    server_us = window.server_cpu / window.pairs * 1e6 if window.pairs else 0.0
    client_us = window.client_cpu / window.pairs * 1e6 if window.pairs else 0.0
    return (
        "grpc ceiling (no-op BillingService in a child process, talos_common.server.build_server, "
        f"same clients): {rate:.0f} pairs/s (CPU per pair: server {server_us:.0f} us, "
        f"clients {client_us:.0f} us) = ratio {rate / tps:.2f} of pgbench"
    )


def _ledger_stats(proc: ServiceProcess) -> dict[str, Any]:
    """Billing's closing line: how many batches (transactions) carried the operations."""
    for line in reversed(proc.log_path.read_text().splitlines()):
        if '"ledger closed"' in line:
            entry: dict[str, Any] = json.loads(line)
            return entry
    return {}


async def _audit(settings: Settings) -> str:
    store = await Store.open(settings, migrate=False)
    try:
        report = await store.audit()
    finally:
        await store.close()
    if not report.ok:
        raise SystemExit(f"audit failed: {report.problems}")
    return f"audit ok: {report.entries} entries sum to {report.ledger_sum}, revenue {report.revenue}"


def _psql(dsn: str, sql: str) -> None:
    subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", dsn, "-c", sql], check=True, capture_output=True)


def run_pgbench(dsn: str, database: str, clients: int, seconds: float) -> float:
    if shutil.which("pgbench") is None:
        raise SystemExit("pgbench not found: apt-get install postgresql-contrib (or postgresql-client)")
    url = sqlalchemy.make_url(dsn)
    host = url.host or str(url.query.get("host") or "127.0.0.1")  # ?host=/dir is a Unix socket
    base = ["-h", host, "-p", str(url.port or 5432), "-U", url.username or "postgres"]
    env = {**os.environ, **({"PGPASSWORD": url.password} if url.password else {})}
    exists = subprocess.run(
        [
            "psql",
            *base,
            "-d",
            url.database or "postgres",
            "-tAc",
            f"SELECT 1 FROM pg_database WHERE datname = '{database}'",
        ],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout.strip()
    if exists != "1":
        subprocess.run(["createdb", *base, database], check=True, env=env)
        subprocess.run(["pgbench", *base, "-i", "-q", database], check=True, capture_output=True, env=env)
    threads = max(1, min(clients, os.cpu_count() or 1))
    out = subprocess.run(
        [
            "pgbench",
            *base,
            "-N",
            "-c",
            str(clients),
            "-j",
            str(threads),
            "-T",
            str(max(1, round(seconds))),
            database,
        ],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    match = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", out)
    if match is None:
        raise SystemExit(f"cannot read pgbench's output:\n{out}")
    return float(match.group(1))


def _versions(dsn: str) -> dict[str, Any]:
    import sqlite3

    server = subprocess.run(
        ["psql", "-tAc", "SHOW server_version", dsn.replace("+asyncpg", "")], capture_output=True, text=True
    ).stdout.strip()
    return {
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "sqlalchemy": sqlalchemy.__version__,
        "sqlite": sqlite3.sqlite_version,
        "postgresql": server or "?",
        "cpus": os.cpu_count(),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="measured time per store (default 10)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--dsn", default=os.environ.get("TALOS_BENCH_POSTGRES", DEFAULT_DSN))
    parser.add_argument("--pgbench-db", default="pgbench_talos")
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument(
        "--skip-ceiling", action="store_true", help="leave out the no-op gRPC ceiling measurement"
    )
    parser.add_argument("--noop-server", action="store_true", help=argparse.SUPPRESS)  # the ceiling's child
    args = parser.parse_args(argv)
    if args.noop_server:
        asyncio.run(_serve_noop())
        return

    dsn = args.dsn.replace("postgresql+asyncpg://", "postgresql://")
    print("versions:", " ".join(f"{k}={v}" for k, v in _versions(dsn).items()), flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="talos-bench-billing-"))
    try:
        results = []
        if not args.skip_sqlite:
            sqlite_env = {"TALOS_BILLING_DATA_DIR": str(workdir / "sqlite")}
            results.append(run_store("sqlite", sqlite_env, workdir, args.clients, args.seconds))
            print(_report(results[-1]), flush=True)
            print("  " + asyncio.run(_audit(Settings(data_dir=workdir / "sqlite"))), flush=True)
        schema = f"talos_bench_{secrets.token_hex(4)}"
        pg_env = {
            "TALOS_BILLING_DATA_DIR": str(workdir / "pg"),
            "TALOS_BILLING_DATABASE_URL": dsn,
            "TALOS_BILLING_DATABASE_SCHEMA": schema,
        }
        # pgbench just before and just after billing on PostgreSQL: the machine's load drifts.
        tps_before = run_pgbench(dsn, args.pgbench_db, args.clients, args.seconds)
        print(f"pgbench -N (simple-update), {args.clients} clients, before: {tps_before:.0f} tps", flush=True)
        try:
            results.append(run_store("postgresql", pg_env, workdir, args.clients, args.seconds))
            print(_report(results[-1]), flush=True)
            print("  " + asyncio.run(_audit(Settings(database_url=dsn, database_schema=schema))), flush=True)
        finally:
            _psql(dsn, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        tps_after = run_pgbench(dsn, args.pgbench_db, args.clients, args.seconds)
        print(f"pgbench -N (simple-update), {args.clients} clients, after: {tps_after:.0f} tps", flush=True)
        tps = (tps_before + tps_after) / 2
        if not args.skip_ceiling:
            print(_ceiling_report(run_ceiling(workdir, args.clients, args.seconds), tps), flush=True)
        print(f"postgresql pairs/s {results[-1].rate:.0f} / pgbench tps {tps:.0f} (mean of before and after)")
        print(f"ratio {results[-1].rate / tps:.2f}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _report(result: StoreResult) -> str:
    per_pair = result.server_cpu_seconds / result.pairs * 1e6 if result.pairs else 0.0
    client_per_pair = result.client_cpu_seconds / result.pairs * 1e6 if result.pairs else 0.0
    ledger = result.ledger
    batching = ""
    if ledger.get("batches"):
        batching = (
            f"; {ledger['operations'] / ledger['batches']:.1f} operations per transaction, "
            f"{ledger['batch_ms']} ms each"
        )
    return (
        f"{result.store}: {result.rate:.0f} reserve+capture pairs/s "
        f"({result.pairs} in {result.seconds:.1f} s; pair latency p50 {result.p50_ms:.1f} ms, "
        f"p99 {result.p99_ms:.1f} ms; CPU per pair: billing {per_pair:.0f} us, "
        f"clients {client_per_pair:.0f} us{batching}); ActiveNodes of {MAX_ACTIVE_NODES} ids: "
        f"p50 {result.active_nodes_p50_ms:.1f} ms, billing CPU {result.active_nodes_cpu_ms:.1f} ms per call"
    )


if __name__ == "__main__":
    main()
