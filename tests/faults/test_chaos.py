"""Chaos: clients generate while services are SIGKILLed and restarted; no credit is lost.

``TALOS_CHAOS_SECONDS`` sets how long faults are injected (default 45 s for CI; a manual
soak sets it to hours). Afterwards every hold must be resolved, every failure refunded, and
the ledger must sum to zero. Images received and images charged match exactly, but for two
bounded kinds: an image the gateway sent whose answer the client lost (charged: it left the
gateway), and an image received whose charge never came (free: the gateway or billing died
between delivery and capture, and the hold expired).
"""

from __future__ import annotations

import os
import random
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from talos_dev.mesh import LocalMesh
from talos_dev.procs import ServiceProcess

from .conftest import http, verbose_mesh

PRICE = 18
GRANT = 100_000
CHAOS_SECONDS = float(os.environ.get("TALOS_CHAOS_SECONDS", "45"))
HOLD_TTL = 20
SWEEP = 1
CAPTURED, RELEASED, EXPIRED, HELD = 2, 3, 4, 1


@dataclass
class ClientLog:
    completed: list[str] = field(default_factory=list)
    failed: Counter[str] = field(default_factory=Counter)
    transport_errors: int = 0


def _client(base_url: str, key: str, stop: threading.Event, log: ClientLog, seed: int) -> None:
    """``base_url`` is read once: a restarted gateway comes back on the same port."""
    rng = random.Random(seed)
    while not stop.is_set():
        body = {
            "prompt": "a lighthouse in a storm",
            "steps": rng.randint(2, 6),
            "size": rng.choice(["1024x1024", "832x1216", "1216x832"]),
        }
        try:
            reply = http("POST", base_url + "/v1/images/generations", key, body, timeout=90)
        except OSError:
            log.transport_errors += 1
            stop.wait(0.3)
            continue
        if reply.status == 200:
            log.completed.append(reply.body["job_id"])
        elif isinstance(reply.body, dict) and "error" in reply.body:
            log.failed[reply.body["error"]["code"]] += 1
            if reply.body["error"]["code"] in ("no_capacity", "unavailable", "rate_limited"):
                stop.wait(0.3)
        else:
            log.transport_errors += 1


def _restart(mesh: LocalMesh, proc: ServiceProcess) -> None:
    for _ in range(20):
        try:
            mesh.restart(proc)
            return
        except Exception:
            time.sleep(0.5)
    raise RuntimeError(f"{proc.name} did not come back")


def _wait_for_no_open_holds(db: sqlite3.Connection, timeout: float) -> None:
    """Returns once no hold is left HELD (the assertions below then say why), or at ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        (held,) = db.execute("SELECT count(*) FROM holds WHERE state = ?", (HELD,)).fetchone()
        if held == 0:
            return
        time.sleep(0.2)


@pytest.mark.slow
def test_chaos_loses_no_credit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mesh = verbose_mesh(
        tmp_path / "var",
        billing_env={
            "TALOS_BILLING_HOLD_TTL_SECONDS": str(HOLD_TTL),
            "TALOS_BILLING_SWEEP_SECONDS": str(SWEEP),
        },
        gateway_env={
            "TALOS_GATEWAY_DOWNSTREAM_TIMEOUT_SECONDS": "3",
            "TALOS_GATEWAY_QUEUE_TIMEOUT_SECONDS": "15",
        },
    )
    rng = random.Random(20261123)
    faults: Counter[str] = Counter()
    logs: list[ClientLog] = []
    try:
        mesh.start(nodes=2)
        accounts = [mesh.create_account(GRANT) for _ in range(3)]
        stop = threading.Event()
        logs = [ClientLog() for _ in accounts]
        clients = [
            threading.Thread(target=_client, args=(mesh.http_url, a.api_key, stop, log, n), daemon=True)
            for n, (a, log) in enumerate(zip(accounts, logs, strict=True))
        ]
        for client in clients:
            client.start()
        deadline = time.monotonic() + CHAOS_SECONDS
        while time.monotonic() < deadline:
            time.sleep(rng.uniform(2.0, 5.0))
            victim_name = rng.choice(["render", "render", "billing", "moderation", "gateway"])
            victim = {
                "render": rng.choice(mesh.nodes),
                "billing": mesh.billing,
                "moderation": mesh.moderation,
                "gateway": mesh.gateway,
            }[victim_name]
            assert victim is not None
            victim.kill()
            faults[victim_name] += 1
            time.sleep(rng.uniform(0.2, 1.5))
            _restart(mesh, victim)
        stop.set()
        for client in clients:
            client.join(timeout=120)
            # A client still running could add a delivered job after the ledger is checked.
            assert not client.is_alive(), "a chaos client did not stop"
        mesh.wait_for_nodes(2)
        db = sqlite3.connect(tmp_path / "var" / "billing.db")
        # Holds orphaned by a killed gateway expire and are released by billing itself.
        _wait_for_no_open_holds(db, HOLD_TTL + 2 * SWEEP + 10)
        for account, log in zip(accounts, logs, strict=True):
            states = dict(
                db.execute(
                    "SELECT state, count(*) FROM holds WHERE account_id = ? GROUP BY state",
                    (account.account_id,),
                ).fetchall()
            )
            assert states.get(HELD, 0) == 0, f"holds left unresolved: {states}"
            captured = states.get(CAPTURED, 0)
            balance = mesh.account(account.account_id).balance
            assert GRANT - balance == PRICE * captured, "balance and captured holds disagree"
            free = 0
            for job_id in log.completed:
                (state,) = db.execute("SELECT state FROM holds WHERE job_id = ?", (f"{job_id}.0",)).fetchone()
                assert state in (CAPTURED, EXPIRED), f"delivered job {job_id} was refunded"
                free += state == EXPIRED
            # Charged is delivered: only an answer lost on its way to the client is charged unseen.
            assert captured - (len(log.completed) - free) <= log.transport_errors
            # Delivered and never charged: only when a kill fell between the delivery and the capture.
            assert free <= faults["gateway"] + faults["billing"]
            # Per job, the account's own ledger legs net to -18 when charged and 0 when refunded.
            per_job = db.execute(
                "SELECT h.job_id, h.state, coalesce(sum(l.amount), 0) FROM holds h"
                " LEFT JOIN ledger l ON l.job_id = h.job_id AND l.account = h.account_id"
                " WHERE h.account_id = ? GROUP BY h.job_id, h.state",
                (account.account_id,),
            ).fetchall()
            for job_id, state, net in per_job:
                assert net == (-PRICE if state == CAPTURED else 0), f"job {job_id}: state {state}, net {net}"
        (total,) = db.execute("SELECT coalesce(sum(amount), 0) FROM ledger").fetchone()
        assert total == 0, "ledger entries do not sum to zero"
        db.close()
    finally:
        mesh.stop()
    completed = sum(len(log.completed) for log in logs)
    failed = sum((log.failed for log in logs), Counter())
    transport = sum(log.transport_errors for log in logs)
    with capsys.disabled():
        print(
            f"\nchaos: {sum(faults.values())} faults injected {dict(faults)}; "
            f"jobs completed-and-charged {completed}, failed-and-refunded {sum(failed.values())} "
            f"{dict(failed)}, connection lost {transport}"
        )
    assert completed > 0, "no job completed under chaos"
