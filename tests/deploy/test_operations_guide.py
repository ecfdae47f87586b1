"""docs/operations.md names only commands, variables and files that exist."""

from __future__ import annotations

import re
import shlex
from typing import Any

from talos_common import settings as talos_settings
from tests.deploy import images, k8s, sizing

GUIDE = (k8s.REPO / "docs" / "operations.md").read_text()
CI = (k8s.REPO / ".ci" / "run").read_text()


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
    paths |= {f"deploy/k8s/{p}" for p in re.findall(r"`((?:base|overlays|components)/[\w./-]+)`", GUIDE)}
    assert len(paths) >= 5
    for path in sorted(paths):
        if "*" in path or "<" in path:
            assert list(k8s.REPO.glob(re.sub(r"<[^>]+>", "*", path))), path
        elif path != "bench/RESULTS.md":  # written by the benchmark runs
            assert (k8s.REPO / path).exists(), path


# -- "Trying it out" is what CI runs -------------------------------------------------------------
def trying_it_out() -> list[str]:
    """The commands of the section's first code block, one per line, comments dropped."""
    section = GUIDE.split("## Trying it out", 1)[1].split("\n## ", 1)[0]
    block = section.split("```\n", 2)[1]
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.split("#", 1)[0].strip()]


def make_targets_run_by_ci() -> set[str]:
    """The targets .ci/run makes, with every prerequisite they make first."""
    todo = re.findall(r"^\s*(?:timeout [^\n]*?)?make ([\w-]+)\s*$", CI, re.M)
    assert todo, ".ci/run makes nothing"
    reached: set[str] = set()
    while todo:
        target = todo.pop()
        if target in reached or target.startswith("$("):
            continue
        reached.add(target)
        todo += [t for t in images.make_prerequisites(target) if not t.startswith("$(")]
    return reached


def test_trying_it_out_is_what_ci_runs_up_to_kubectl_apply() -> None:
    commands = trying_it_out()
    apply = commands.index("kubectl apply -k deploy/k8s/overlays/dev")
    before = commands[:apply]
    ci_targets = make_targets_run_by_ci()
    made = [c.split()[1] for c in before if c.startswith("make ")]
    assert made == ["images", "container-smoke"], before
    assert set(made) <= ci_targets, sorted(set(made) - ci_targets)
    (load,) = [c for c in before if c.startswith("kind load docker-image ")]
    assert load.split()[3:] == [image.ref for image in images.built_images()]
    assert len(before) == len(made) + 1, f"a step CI does not take: {before}"
    ran = [re.sub(r"^timeout .*? make ", "make ", line.strip()) for line in CI.splitlines()]
    assert ran.index("make test") < ran.index("make container-smoke"), (
        "the container step comes after make test"
    )


def test_the_ci_check_sees_a_target_ci_does_not_make() -> None:
    assert "up" not in make_targets_run_by_ci() and "bench" not in make_targets_run_by_ci()
    assert {"test", "container-smoke", "images", "lint", "unit"} <= make_targets_run_by_ci()


def test_the_guide_states_the_dev_overlay_s_node_and_requests(rendered: dict[str, list[Any]]) -> None:
    asked = sizing.total_requests(rendered["dev"])
    node, margin = sizing.DEV_NODE, sizing.SYSTEM_MARGIN
    text = " ".join(GUIDE.split())
    assert f"one node of {sizing.cores(node.cpu)} cores and {sizing.gibibytes(node.memory)} GiB" in text
    assert (
        f"the requests add up to {sizing.cores(asked.cpu)} core and {sizing.gibibytes(asked.memory)} GiB"
        in text
    )
    assert (
        f"leaves {sizing.cores(margin.cpu)} core and {sizing.gibibytes(margin.memory)} GiB for kube-system"
        in text
    )


# -- a contributor's node ----------------------------------------------------------------------
def render_commands() -> list[list[str]]:
    """Every ``talos-render`` command line in the guide (for the image, what follows its name)."""
    text = GUIDE.replace("\\\n", " ")
    found = re.findall(r"talos-render(?::[\w.-]+)? ((?:--[\w-]+(?: [^\s`-][^\s`]*)? ?)+)", text)
    return [shlex.split(command) for command in found]


def test_the_contributor_s_commands_parse_and_dial_the_relay_over_tls() -> None:
    from talos_render.__main__ import build_parser

    commands = render_commands()
    assert len(commands) >= 2, commands
    for words in commands:
        args = build_parser().parse_args(["serve", *words])
        assert args.relay and args.model and args.ca_file, words
        assert not args.insecure, "a contributor's node never dials in plaintext"
    host = commands[0][commands[0].index("--relay") + 1].rsplit(":", 1)[0]
    assert host in (k8s.K8S / "components" / "cert-manager" / "relay-certificate.yaml").read_text(), (
        "the guide's relay name is the one the certificate carries"
    )
