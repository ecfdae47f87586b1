"""One JSON object per log line on stderr.

Services log events and ids, never prompt text, image bytes, API keys or node tokens.
``redact`` is the one place that shortens an id-like secret for a log line.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(time.time(), 3),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(service: str, level: str = "info") -> None:
    """Sends every logger's output as JSON lines to stderr at ``level``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Library loggers at debug or info print payloads and SQL; only their warnings reach us.
    for noisy in ("aiohttp.access", "asyncio", "grpc", "sqlalchemy", "urllib3", "PIL"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def redact(secret: str) -> str:
    """A short, non-reversible tag for a secret, enough to tell two apart in a log."""
    import hashlib

    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()[:8]
