"""Secrets in a rendering: they must only be referenced, never committed as values.

The checkers return lists of problems (empty: fine), so the tests can also prove that each check
fails on a manifest that holds a credential.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

from tests.deploy.k8s import Doc, containers

SECRET_NAME = re.compile(r"TOKEN|PASSWORD|PASSWD|SECRET|API_?KEY|PRIVATE_?KEY|PEPPER|CREDENTIAL|DSN", re.I)
URL_WITH_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]+:[^/\s@]+@", re.I)


def secret_patterns() -> list[re.Pattern[str]]:
    from talos_billing import keys  # the real prefixes of API keys and node tokens

    return [
        URL_WITH_PASSWORD,
        re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
        re.compile(re.escape(keys.API_KEY_PREFIX) + r"[A-Za-z0-9_-]{16,}"),
        re.compile(re.escape(keys.NODE_TOKEN_PREFIX) + r"[A-Za-z0-9_-]{16,}"),
        re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
        re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}\b"),
    ]


def _entropy(text: str) -> float:
    counts = Counter(text)
    return -sum(c / len(text) * math.log2(c / len(text)) for c in counts.values())


def secret_like(value: str) -> str | None:
    """Why ``value`` looks like a credential, or None."""
    for pattern in secret_patterns():
        if pattern.search(value):
            return f"matches {pattern.pattern!r}"
    # A long unbroken run of base64 or hex with letters and digits (names and settings are words
    # joined by "-", "_", "." or "/", and a generated ConfigMap suffix is 10 characters).
    for token in re.findall(r"[A-Za-z0-9+]{24,}={0,2}", value):
        if re.search("[0-9]", token) and re.search("[A-Za-z]", token) and _entropy(token) > 3.5:
            return f"high-entropy string {token[:6]}..."
    return None


def strings(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from strings(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from strings(value, f"{path}[{i}]")
    elif isinstance(node, str):
        yield path, node


def secret_problems(docs: list[Doc]) -> list[str]:
    """Secrets must only be referenced: no Secret objects, no credential-looking values."""
    problems: list[str] = []
    for doc in docs:
        where = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        if doc.get("kind") == "Secret":
            problems.append(f"{where}: a Secret is committed; reference it and create it at install time")
        if doc.get("kind") == "ConfigMap":
            for key in {**doc.get("data", {}), **doc.get("binaryData", {})}:
                if SECRET_NAME.search(key):
                    problems.append(f"{where}: ConfigMap key {key} looks like a secret; use a Secret")
        for path, value in strings(doc):
            reason = secret_like(value)
            if reason:
                problems.append(f"{where}{path}: {reason}")
        for workload in [doc] if doc.get("kind") in ("Deployment", "StatefulSet", "DaemonSet", "Job") else []:
            for container in containers(workload):
                for item in container.get("env", []):
                    if SECRET_NAME.search(item["name"]) and "value" in item:
                        problems.append(f"{where}: env {item['name']} holds a value; use a secretKeyRef")
    return problems
