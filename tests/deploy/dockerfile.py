"""A small static reader for the services' Dockerfiles (no container engine needed).

It understands what the TALOS Dockerfiles use: global ``ARG`` defaults, ``FROM ... AS name``
stages, line continuations, comments, ``ENV k=v ...``, ``EXPOSE``, ``USER``, exec-form
``ENTRYPOINT``/``CMD``, ``COPY``/``RUN``. Enough to lint the images' rules without building them.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

_VAR = re.compile(r"\$\{(\w+)\}|\$(\w+)")


@dataclass(frozen=True)
class Instruction:
    keyword: str
    value: str
    line: int


@dataclass
class Stage:
    base: str
    name: str | None
    index: int
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        """The stage's ENV, later assignments winning (``$VAR`` left as written)."""
        out: dict[str, str] = {}
        for ins in self.all("ENV"):
            tokens = shlex.split(ins.value)
            if tokens and "=" not in tokens[0]:  # legacy form: ENV KEY value
                out[tokens[0]] = " ".join(tokens[1:])
                continue
            for token in tokens:
                key, _, value = token.partition("=")
                out[key] = value
        return out

    def exec_form(self, keyword: str) -> list[str] | None:
        found = self.all(keyword)
        if not found:
            return None
        value = json.loads(found[-1].value)
        assert isinstance(value, list) and all(isinstance(v, str) for v in value)
        return value

    def exposed(self) -> set[int]:
        ports: set[int] = set()
        for ins in self.all("EXPOSE"):
            for token in ins.value.split():
                ports.add(int(token.split("/")[0]))
        return ports

    def run_commands(self) -> list[str]:
        """Every shell command of every RUN, split at ``&&``, ``;`` and ``||``."""
        commands: list[str] = []
        for ins in self.all("RUN"):
            commands += [c for c in split_shell(ins.value) if c]
        return commands


def split_shell(text: str) -> list[str]:
    """Splits a shell line at ``&&``, ``||`` and ``;`` outside quotes."""
    parts: list[str] = []
    current: list[str] = []
    quote = ""
    i = 0
    while i < len(text):
        ch = text[i]
        if quote:
            current.append(ch)
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
            current.append(ch)
        elif text.startswith(("&&", "||"), i) or ch == ";":
            parts.append(" ".join("".join(current).split()))
            current = []
            i += 1 if ch == ";" else 2
            continue
        else:
            current.append(ch)
        i += 1
    parts.append(" ".join("".join(current).split()))
    return parts


@dataclass
class Dockerfile:
    path: Path
    args: dict[str, str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(name)


def _logical_lines(text: str) -> list[tuple[int, str]]:
    lines: list[tuple[int, str]] = []
    buffer: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not buffer):
            continue  # comments (also inside a continuation) and blank lines
        if not buffer:
            start = number
        if stripped.endswith("\\"):
            buffer.append(stripped[:-1].strip())
            continue
        buffer.append(stripped)
        lines.append((start, " ".join(b for b in buffer if b)))
        buffer = []
    if buffer:
        lines.append((start, " ".join(buffer)))
    return lines


def substitute(value: str, args: dict[str, str]) -> str:
    return _VAR.sub(lambda m: args.get(m.group(1) or m.group(2), m.group(0)), value)


def parse(path: Path) -> Dockerfile:
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for number, line in _logical_lines(path.read_text()):
        keyword, _, value = line.partition(" ")
        keyword = keyword.upper()
        value = value.strip()
        if keyword == "FROM":
            parts = value.split()
            parts = [p for p in parts if not p.startswith("--platform")]
            base = substitute(parts[0], args)
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base=base, name=name, index=len(stages)))
            continue
        if keyword == "ARG" and not stages:
            key, _, default = value.partition("=")
            args[key.strip()] = default.strip()
            continue
        if not stages:
            raise ValueError(f"{path}:{number}: {keyword} before the first FROM")
        stages[-1].instructions.append(Instruction(keyword, value, number))
    return Dockerfile(path=path, args=args, stages=stages)
