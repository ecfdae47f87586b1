"""docs/operations.md names only commands, variables and files that exist."""

from __future__ import annotations

import re
import shlex

from talos_common import settings as talos_settings
from tests.deploy import k8s

GUIDE = (k8s.REPO / "docs" / "operations.md").read_text()


def test_every_talos_admin_command_in_the_guide_parses() -> None:
    from talos_billing import admin

    parser = admin.parser()
    commands = re.findall(r"talos-admin ((?:[\w-]+)(?: [A-Z_]+| --[\w-]+(?: [\w-]+)?)*)", GUIDE)
    assert len(commands) >= 6
    placeholders = {"ACCOUNT_ID": "acc_1", "NODE_ID": "node_1"}
    for command in commands:
        words = [placeholders.get(w, w) for w in shlex.split(command)]
        parser.parse_args(words)  # exits (SystemExit) on an unknown command or argument


def test_every_talos_variable_in_the_guide_is_a_setting() -> None:
    known = {
        name
        for spec in k8s.SERVICES.values()
        for name in talos_settings.variables(spec.settings_class(), spec.prefix())
    }
    from talos_billing import admin

    known.add(admin.ADDR_VARIABLE)  # read by talos-admin, not by the billing service
    named = set(re.findall(r"\bTALOS_[A-Z_]+[A-Z]\b", GUIDE))
    # "TALOS_<SERVICE>_*" style placeholders end with an underscore and are not matched.
    assert len(named) >= 10
    assert named <= known, sorted(named - known)


def test_every_repository_path_in_the_guide_exists() -> None:
    paths = set(re.findall(r"`((?:deploy|services|docs|requirements|bench)/[\w./<>*-]+)`", GUIDE))
    paths |= {f"deploy/k8s/{p}" for p in re.findall(r"`((?:base|overlays)/[\w./-]+)`", GUIDE)}
    assert len(paths) >= 5
    for path in sorted(paths):
        if "*" in path or "<" in path:
            assert list(k8s.REPO.glob(re.sub(r"<[^>]+>", "*", path))), path
        elif path != "bench/RESULTS.md":  # written by the benchmark runs
            assert (k8s.REPO / path).exists(), path
