"""What `make images` builds, read from the files that decide it (no container engine needed).

``deploy/docker/images.list`` names each image and its Dockerfile; ``deploy/docker/base.sh`` names
the base the Dockerfiles start from; the Makefile's ``up`` target names the development
supervisor, which no image may carry.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "deploy" / "docker"
IMAGES_LIST = DOCKER / "images.list"
BASE_SCRIPT = DOCKER / "base.sh"
BUILD_SCRIPT = DOCKER / "build-images.sh"
MAKEFILE = REPO / "Makefile"
# Folders never searched for installable packages.
_NOT_PACKAGES = {".venv", "var", ".git", "node_modules", "build", "dist"}


@dataclass(frozen=True)
class BuiltImage:
    ref: str  # name:tag as `make images` tags it
    dockerfile: Path

    @property
    def name(self) -> str:
        return self.ref.rsplit(":", 1)[0]

    @property
    def tag(self) -> str:
        return self.ref.rsplit(":", 1)[1]

    @property
    def service(self) -> str:
        return self.name.removeprefix("talos-")


def built_images() -> list[BuiltImage]:
    images = []
    for line in IMAGES_LIST.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            ref, dockerfile = line.split()
            images.append(BuiltImage(ref, REPO / dockerfile))
    return images


def dockerfile_of(image: str) -> Path | None:
    """The Dockerfile `make images` builds ``image`` from, or None for an image it does not build."""
    for built in built_images():
        if built.ref == image:
            return built.dockerfile
    return None


def base_image_name() -> str:
    """The stable name base.sh tags the Debian base with (the Dockerfiles' BASE_IMAGE default)."""
    found = re.search(r"^readonly STABLE_NAME=(\S+)$", BASE_SCRIPT.read_text(), re.M)
    assert found, f"{BASE_SCRIPT} names no STABLE_NAME"
    return found.group(1)


def make_target(name: str) -> str:
    """The recipe lines (and prerequisites line) of one Makefile target."""
    text = MAKEFILE.read_text()
    found = re.search(rf"^{re.escape(name)}:(.*)\n((?:\t.*\n?)*)", text, re.M)
    assert found, f"no target {name} in the Makefile"
    return found.group(1) + "\n" + found.group(2)


def make_prerequisites(name: str) -> list[str]:
    return make_target(name).split("\n", 1)[0].split()


# -- the development supervisor --------------------------------------------------------------
@dataclass(frozen=True)
class LocalPackage:
    distribution: str  # as its pyproject.toml names it
    folder: Path  # the folder holding pyproject.toml
    source_root: Path  # where its import packages live (setuptools' "where")


def local_packages() -> list[LocalPackage]:
    found = []
    for pyproject in sorted(REPO.rglob("pyproject.toml")):
        if pyproject.parent == REPO or _NOT_PACKAGES & set(pyproject.relative_to(REPO).parts):
            continue
        data = tomllib.loads(pyproject.read_text())
        name = data.get("project", {}).get("name")
        if not name:
            continue
        find = data.get("tool", {}).get("setuptools", {}).get("packages", {}).get("find", {})
        where = (find.get("where") or ["."])[0]
        found.append(LocalPackage(name.lower(), pyproject.parent, pyproject.parent / where))
    return found


def module_file(package: LocalPackage, module: str) -> Path | None:
    base = package.source_root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def supervisor_module() -> str:
    """The module `make up` runs: the development supervisor."""
    found = re.search(r"-m ([\w.]+) up\b", make_target("up"))
    assert found, "the Makefile's up target runs no `python -m MODULE up`"
    return found.group(1)


def supervisor_package() -> LocalPackage:
    module = supervisor_module()
    holders = [p for p in local_packages() if module_file(p, module)]
    assert len(holders) == 1, f"{module} is in {[p.distribution for p in holders]}"
    return holders[0]
