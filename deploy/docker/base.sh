#!/usr/bin/env bash
# The base every TALOS image builds on, made from Debian's archive alone (no container registry):
# Debian bookworm (minbase) with Python 3.11 and venv/pip, security updates applied, and the
# host's extra CA certificates (a network that inspects TLS needs them for pip inside a build).
#
#   deploy/docker/base.sh            prints the image's name on the last line of stdout
#
# Cached by Docker alone: the image is tagged with a hash of what makes it (this script and the
# extra certificates), and an image of that tag is reused as it is; delete it to take newer
# Debian updates (docker rmi -f $(docker images -q talos-base)). It is also tagged with the
# stable name the Dockerfiles default to (BASE_IMAGE).
# Needs root, debootstrap and a running Docker engine. DEBIAN_MIRROR overrides the mirror.
set -euo pipefail

readonly STABLE_NAME=talos-base:bookworm-py311
readonly SUITE=bookworm
# Installed with apt inside the new system (debootstrap's own resolver misses virtual packages).
readonly PACKAGES=(python3.11 python3.11-venv ca-certificates)
readonly EXTRA_CA_DIR=/usr/local/share/ca-certificates

log() { echo "base: $*" >&2; }

# The Debian mirror the host's apt uses (deb822 or one-line sources), else deb.debian.org.
host_mirror() {
  local found
  found=$(grep -rhoE '(URIs:|^deb)[[:space:]]+https?://[^[:space:]]+/debian/?([[:space:]]|$)' \
    /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null | awk '{print $2}' | head -1 || true)
  echo "${found:-http://deb.debian.org/debian}"
}

extra_certificates() {
  find "$EXTRA_CA_DIR" -type f -name '*.crt' 2>/dev/null | LC_ALL=C sort
}

image_key() {
  {
    cat "$0"
    extra_certificates | while read -r cert; do
      basename "$cert"
      cat "$cert"
    done
  } | sha256sum | cut -c1-12
}

main() {
  local key tag
  key=$(image_key)
  tag="$STABLE_NAME-$key"
  if docker image inspect "$tag" >/dev/null 2>&1; then
    log "$tag is cached"
    docker tag "$tag" "$STABLE_NAME"
    echo "$tag"
    return
  fi

  local mirror security rootfs started
  mirror=${DEBIAN_MIRROR:-$(host_mirror)}
  mirror=${mirror%/}
  security="${mirror%/debian}/debian-security"
  rootfs=$(mktemp -d /tmp/talos-base.XXXXXX)
  started=$SECONDS
  # shellcheck disable=SC2064  # the path is fixed now
  trap "cleanup '$rootfs'" EXIT

  log "debootstrap $SUITE from $mirror"
  debootstrap --variant=minbase --components=main "$SUITE" "$rootfs" "$mirror" >&2

  # Point releases lag behind security fixes: take the updates, as an image rebuild would.
  cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $mirror $SUITE main
deb $mirror $SUITE-updates main
deb $security $SUITE-security main
EOF
  printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"  # start no service in the chroot
  chmod 755 "$rootfs/usr/sbin/policy-rc.d"
  chroot "$rootfs" apt-get update -qq >&2
  log "installing ${PACKAGES[*]} and the updates"
  chroot "$rootfs" env DEBIAN_FRONTEND=noninteractive apt-get -y -qq upgrade >&2
  chroot "$rootfs" env DEBIAN_FRONTEND=noninteractive \
    apt-get -y -qq install --no-install-recommends "${PACKAGES[@]}" >&2

  local cert
  while read -r cert; do
    [ -n "$cert" ] || continue
    log "adding the host's CA certificate $(basename "$cert")"
    cp "$cert" "$rootfs$EXTRA_CA_DIR/"
  done < <(extra_certificates)
  chroot "$rootfs" update-ca-certificates >&2

  # Nothing an image needs at run time: package lists and caches, docs, the chroot's leftovers.
  chroot "$rootfs" apt-get clean
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/log/*.log \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
    "$rootfs"/usr/sbin/policy-rc.d "$rootfs"/tmp/* "$rootfs"/var/tmp/* "$rootfs"/root/.cache
  : >"$rootfs/etc/resolv.conf"
  : >"$rootfs/etc/hostname"

  log "importing into Docker as $tag"
  tar -C "$rootfs" --numeric-owner --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' -c . |
    docker import \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'ENV LANG=C.UTF-8' \
      --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
      --change 'CMD ["python3.11"]' \
      --message "TALOS base: Debian $SUITE minbase, ${PACKAGES[*]}" \
      - "$tag" >/dev/null
  docker tag "$tag" "$STABLE_NAME"
  log "made $tag in $((SECONDS - started)) s"
  echo "$tag"
}

cleanup() {
  local rootfs=$1 mount
  # debootstrap mounts /proc and /sys inside the target; an interrupted run may leave them.
  awk -v root="$rootfs" 'index($2, root) == 1 {print $2}' /proc/mounts | sort -r |
    while read -r mount; do
      umount -l "$mount" 2>/dev/null || true
    done
  rm -rf --one-file-system "$rootfs"
}

main "$@"
