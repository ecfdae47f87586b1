#!/usr/bin/env bash
# `make images`: every image of deploy/docker/images.list, built from the repository root on the
# base made from Debian's archive (deploy/docker/base.sh), with no container registry involved.
#
# 1. the base image (cached by Docker: made again only when base.sh or the host's extra CA
#    certificates change);
# 2. talos-torch-wheel:<torch version>-cpu, a scratch image holding the CPU build of the torch
#    that requirements/constraints.txt pins, as the host's pip resolves it (the CPU render image
#    installs torch from it; cached by Docker);
# 3. the images, by Docker's classic builder (its layer cache makes a rebuild without changes
#    take seconds).
# Prints how long each step took. PYTHON names the host interpreter whose pip finds the wheel.
set -euo pipefail
cd "$(dirname "$0")/../.."

readonly HERE=deploy/docker
readonly CONSTRAINTS=requirements/constraints.txt
# The classic builder: newer Docker clients need the buildx plugin for BuildKit, and BuildKit
# would pull its Dockerfile front end from a registry for a `# syntax=` line.
export DOCKER_BUILDKIT=0

log() { echo "images: $*" >&2; }

torch_version() {
  local version
  version=$(sed -n 's/^torch==\([0-9][0-9.]*\).*/\1/p' "$CONSTRAINTS")
  [ -n "$version" ] || { log "no torch==VERSION in $CONSTRAINTS"; exit 1; }
  echo "$version"
}

# A Python 3.11 with pip, as the host has it (its pip configuration says where wheels lie); a
# bare Debian python3.11 has no pip, so it gets a throwaway virtual environment in $1.
host_python() {
  local py
  for py in "${PYTHON:-}" .venv/bin/python python3.11; do
    if [ -n "$py" ] && "$py" -m pip --version >/dev/null 2>&1; then
      echo "$py"
      return
    fi
  done
  python3.11 -m venv "$1/venv" >&2 || { log "no python3.11 with pip or venv"; exit 1; }
  echo "$1/venv/bin/python"
}

# The CPU wheel as this machine's pip finds it: the +cpu local version is on no index pip uses
# by default, so this never falls back to PyPI's multi-GB CUDA build.
torch_wheel_image() {
  local version tag dir wheel
  version=$(torch_version)
  tag="talos-torch-wheel:$version-cpu"
  if docker image inspect "$tag" >/dev/null 2>&1; then
    log "$tag is cached"
    echo "$tag"
    return
  fi
  dir=$(mktemp -d /tmp/talos-torch-wheel.XXXXXX)
  # shellcheck disable=SC2064  # the path is fixed now
  trap "rm -rf '$dir'" RETURN
  mkdir "$dir/wheel"
  if ! "$(host_python "$dir")" -m pip download -q --no-deps --only-binary=:all: -d "$dir/wheel" \
    "torch==$version+cpu" >&2; then
    log "pip found no CPU build of torch $version for Python 3.11 on this machine."
    log "Put torch-$version+cpu-cp311-cp311-*_x86_64.whl where pip looks (PIP_FIND_LINKS), or"
    log "point PIP_EXTRA_INDEX_URL at an index of CPU builds."
    exit 1
  fi
  wheel=$(find "$dir/wheel" -name "torch-$version+cpu-cp311-cp311-*x86_64.whl" | head -1)
  [ -n "$wheel" ] || { log "not a CPython 3.11 x86_64 CPU wheel: $(ls "$dir/wheel")"; exit 1; }
  log "torch wheel $(basename "$wheel") ($(du -m "$wheel" | cut -f1) MB) -> $tag"
  docker build -q --force-rm -f "$HERE/torch-wheel.Dockerfile" -t "$tag" "$dir/wheel" >/dev/null
  echo "$tag"
}

# The build context: what .dockerignore lets in (its `!` lines), as git sees it (tracked files
# and new ones it does not ignore), every file with one fixed time. The classic builder keys its
# COPY cache on file times too, so a fresh clone of unchanged sources (CI's case) reuses every
# layer. Outside a git work tree the repository root is the context, as it is.
stage_context() {
  local dir=$1 paths
  if ! git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    echo .
    return
  fi
  mapfile -t paths < <(sed -n 's|^!\(.*[^/]\)/*$|\1|p' .dockerignore)
  git ls-files -z --cached --others --exclude-standard -- "${paths[@]}" |
    while IFS= read -r -d '' file; do
      [ -e "$file" ] && printf '%s\0' "$file"
    done | tar --null -T - -cf - | tar -xf - -C "$dir"
  cp .dockerignore "$dir/"
  find "$dir" -exec touch -h -d @0 {} +
  echo "$dir"
}

main() {
  local started=$SECONDS t base torch ref dockerfile args context
  t=$SECONDS
  base=$(bash "$HERE/base.sh" | tail -1)
  log "base $base: $((SECONDS - t)) s"
  t=$SECONDS
  torch=$(torch_wheel_image)
  log "torch wheel image $torch: $((SECONDS - t)) s"

  context=$(mktemp -d /tmp/talos-context.XXXXXX)
  # shellcheck disable=SC2064  # the path is fixed now
  trap "rm -rf '$context'" EXIT
  context=$(stage_context "$context")
  while read -r ref dockerfile; do
    case "$ref" in '' | '#'*) continue ;; esac
    t=$SECONDS
    args=(--build-arg "BASE_IMAGE=$base")
    if grep -q '^ARG TORCH_WHEEL_IMAGE' "$dockerfile"; then
      args+=(--build-arg "TORCH_WHEEL_IMAGE=$torch")
    fi
    log "building $ref from $dockerfile"
    docker build --force-rm "${args[@]}" -f "$dockerfile" -t "$ref" "$context"
    log "$ref: $((SECONDS - t)) s"
  done <"$HERE/images.list"
  log "all images: $((SECONDS - started)) s"
}

main "$@"
