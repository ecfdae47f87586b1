"""Starts TALOS services as real child processes and learns their addresses.

Each service prints one ``TALOS_READY {json}`` line on stdout once it listens; this module
waits for that line (so ports may be 0) and sends everything else the child prints to a
log file. ``make up`` and the test suite both start the mesh through it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

READY_PREFIX = "TALOS_READY "


class ServiceFailed(RuntimeError):
    """A child exited or stayed silent before announcing it was ready."""


class ServiceProcess:
    """One service child process: start it, wait until ready, stop or kill it."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        env: Mapping[str, str],
        log_path: Path,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = argv
        self.env = dict(env)
        self.log_path = log_path
        self.cwd = cwd
        self.ready: dict[str, Any] = {}
        self.proc: subprocess.Popen[str] | None = None
        self._ready_event = threading.Event()
        self._log: IO[str] | None = None
        self._readers: list[threading.Thread] = []

    def start(self, timeout: float = 120.0) -> dict[str, Any]:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "a", buffering=1, encoding="utf-8")
        self._ready_event.clear()
        self.ready = {}
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            self.argv,
            env=env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, True), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, False), daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        deadline = time.monotonic() + timeout
        while not self._ready_event.wait(0.05):
            if self.proc.poll() is not None:
                self._join_readers()
                raise ServiceFailed(
                    f"{self.name} exited with {self.proc.returncode} before it was ready; "
                    f"last lines of {self.log_path}:\n{self.tail()}"
                )
            if time.monotonic() > deadline:
                self.kill()
                raise ServiceFailed(f"{self.name} was not ready within {timeout:.0f}s:\n{self.tail()}")
        return self.ready

    def _pump(self, stream: IO[str], is_stdout: bool) -> None:
        for line in stream:
            if is_stdout and line.startswith(READY_PREFIX) and not self._ready_event.is_set():
                self.ready = json.loads(line[len(READY_PREFIX) :])
                self._ready_event.set()
            if self._log is not None and not self._log.closed:
                self._log.write(line)

    def _join_readers(self) -> None:
        for reader in self._readers:
            reader.join(timeout=5)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(encoding="utf-8").splitlines()[-lines:])
        except OSError:
            return ""

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(sig)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, wait for the drain, SIGKILL if it does not come."""
        if self.proc is None:
            return None
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._close()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc is None:
            return
        if self.alive():
            self.proc.kill()
        self.proc.wait()
        self._close()

    def wait(self, timeout: float | None = None) -> int:
        assert self.proc is not None
        code = self.proc.wait(timeout)
        self._close()
        return code

    def _close(self) -> None:
        self._join_readers()
        if self._log is not None:
            self._log.close()


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]
