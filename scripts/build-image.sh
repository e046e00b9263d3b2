#!/usr/bin/env bash
# Build Mooring's image from the Containerfile without a container engine or an image
# registry: a Debian 12 rootfs from Debian's packages (debootstrap, with python3 3.11)
# becomes the base image in buildah's local store, then `buildah bud --isolation chroot`
# builds the Containerfile on it with pip reaching PyPI, and the result's entrypoint is
# run as uid 65532 (`mooring --help`). Needs root (buildah's chroot isolation, mounts).
#
#   bash scripts/build-image.sh            # everything; the base is reused when present
#   REBUILD_BASE=1 bash scripts/build-image.sh
#
# Environment (all optional):
#   IMAGE         tag of the result (default ghcr.io/mooring/mooring:<version>, the chart's
#                 default image for its appVersion)
#   BASE_IMAGE    tag of the local base (default localhost/bookworm-python:3.11)
#   REBUILD_BASE  1: debootstrap the base again even if BASE_IMAGE exists
#   MIRROR        Debian mirror for debootstrap (default: the one apt uses here)
#   WORK_DIR      scratch space for the rootfs (default /tmp/mooring-image; removed after)
#   ARCHIVE       also write the image there, as a buildah push destination, e.g.
#                 oci-archive:/tmp/mooring.tar or docker-archive:/tmp/mooring.tar
#   PIP_CA        CA bundle handed to pip as the build secret pip-ca (default: the host's
#                 /etc/ssl/certs/ca-certificates.crt, so a TLS-intercepting proxy trusted
#                 here is trusted in the build too); PIP_CA= (empty) passes none
#
# Each step prints "build-image: STEP ok (N.Ns)"; a step that cannot work here stops the
# script with one line "build-image: STEP failed: REASON" (details in $WORK_DIR/STEP.log)
# and exit code 1.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml | head -n1)
IMAGE=${IMAGE:-ghcr.io/mooring/mooring:${VERSION}}
BASE_IMAGE=${BASE_IMAGE:-localhost/bookworm-python:3.11}
REBUILD_BASE=${REBUILD_BASE:-0}
WORK_DIR=${WORK_DIR:-/tmp/mooring-image}
PIP_CA=${PIP_CA-/etc/ssl/certs/ca-certificates.crt}
ARCHIVE=${ARCHIVE:-}
SUITE=bookworm
CTR=""

die() {
  echo "build-image: $*" >&2
  exit 1
}

# A step's working container and the read-only view of it: gone when the step ends,
# however it ends.
cleanup_step() {
  local m
  for m in "$WORK_DIR/ro/proc" "$WORK_DIR/ro/tmp" "$WORK_DIR/ro"; do
    if mountpoint -q "$m"; then umount "$m" || umount -l "$m" || true; fi
  done
  rmdir "$WORK_DIR/ro" 2>/dev/null || true
  if [ -n "$CTR" ]; then
    buildah umount "$CTR" >/dev/null 2>&1 || true
    buildah rm "$CTR" >/dev/null 2>&1 || true
  fi
}

# The rootfs (about 280 MB) once the script ends; debootstrap may leave /proc or /sys
# mounted in it when it fails.
cleanup() {
  local m
  if [ -d "$WORK_DIR/rootfs" ]; then
    for m in proc sys dev/pts dev; do
      if mountpoint -q "$WORK_DIR/rootfs/$m"; then umount -l "$WORK_DIR/rootfs/$m" || true; fi
    done
    rm -rf --one-file-system "$WORK_DIR/rootfs"
  fi
}
trap cleanup EXIT

# step NAME REASON FUNCTION: run FUNCTION in a subshell with errexit (which `f || rc=$?`
# would switch off), its output in $WORK_DIR/NAME.log; time it.
step() {
  local name=$1 reason=$2 start ms rc=0
  shift 2
  start=$(date +%s%N)
  set +e
  (
    trap cleanup_step EXIT
    set -e
    "$@"
  ) >"$WORK_DIR/$name.log" 2>&1
  rc=$?
  set -e
  ms=$((($(date +%s%N) - start) / 1000000))
  if [ "$rc" != 0 ]; then
    die "$name failed: $reason (exit $rc after $((ms / 1000))s; $WORK_DIR/$name.log: $(why "$WORK_DIR/$name.log"))"
  fi
  printf 'build-image: %s ok (%d.%01ds)\n' "$name" $((ms / 1000)) $((ms % 1000 / 100))
}

# The image ID a tag names now ("" if none), and dropping that image once the tag has
# moved to a new build (only that one: other untagged images in the store are not ours).
image_id() { buildah inspect --type image --format '{{.FromImageID}}' "$1" 2>/dev/null || true; }
drop_replaced() {
  local old=$1 tag=$2
  if [ -n "$old" ] && [ "$old" != "$(image_id "$tag")" ]; then
    buildah rmi "$old" >/dev/null 2>&1 || true
  fi
}

# The telling line of a failed step's log: the first error pip, apt, debootstrap or
# buildah printed, else the last line; at most 300 characters.
why() {
  local line
  line=$(grep -m1 -E 'CERTIFICATE_VERIFY_FAILED|^ERROR|^E: |^Error|error:|denied|not permitted' "$1" ||
    tail -n1 "$1")
  echo "${line:0:300}"
}

# The Debian mirror apt uses here (deb822 .sources or one-line sources.list).
apt_mirror() {
  local uri
  uri=$(grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources |
    awk '{print $2}' | grep -E '/debian/?$' | head -n1 || true)
  if [ -z "$uri" ]; then
    uri=$(grep -hsE '^deb +(\[[^]]*\] +)?https?://[^ ]+/debian/? +bookworm' \
      /etc/apt/sources.list /etc/apt/sources.list.d/*.list |
      sed -E 's/^deb +(\[[^]]*\] +)?//' | awk '{print $1}' | head -n1 || true)
  fi
  echo "${uri:-http://deb.debian.org/debian}"
}

install_tools() {
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    buildah debootstrap crun
}

debootstrap_base() {
  rm -rf --one-file-system "$WORK_DIR/rootfs"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    "$SUITE" "$WORK_DIR/rootfs" "$MIRROR"
}

# What python:3.11-slim-bookworm also leaves out: apt's lists and cache, docs (but the
# copyright files), man pages, locales; dpkg is told to keep leaving them out.
trim_base() {
  local r=$WORK_DIR/rootfs
  chroot "$r" apt-get clean
  rm -rf "$r"/var/lib/apt/lists/* "$r"/var/cache/apt/*.bin "$r"/var/log/*.log \
    "$r"/var/log/apt/* "$r"/usr/share/man/* "$r"/usr/share/info/* "$r"/usr/share/locale/*
  find "$r/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  find "$r/usr/share/doc" -mindepth 1 -type d -empty -delete
  cat >"$r/etc/dpkg/dpkg.cfg.d/slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
EOF
  : >"$r/etc/resolv.conf"
  : >"$r/etc/hostname"
  chroot "$r" python3 -c 'import ensurepip, ssl, sys; assert sys.version_info[:2] == (3, 11)'
}

import_base() {
  local mnt
  CTR=$(buildah from scratch)
  mnt=$(buildah mount "$CTR")
  tar -C "$WORK_DIR/rootfs" --numeric-owner --xattrs -cf - . |
    tar -C "$mnt" --numeric-owner --xattrs -xpf -
  buildah umount "$CTR"
  buildah config --os linux --arch amd64 \
    --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 --cmd python3 \
    --label "org.opencontainers.image.description=Debian $SUITE minbase + python3 (debootstrap from $MIRROR)" \
    "$CTR"
  buildah commit --rm "$CTR" "$BASE_IMAGE"
  CTR=""
}

build_image() {
  local secret=()
  if [ -n "$PIP_CA" ]; then secret=(--secret "id=pip-ca,src=$PIP_CA"); fi
  buildah bud --isolation chroot --layers=false \
    --build-arg "BASE=$BASE_IMAGE" \
    --build-arg "VERSION=$VERSION" \
    --build-arg "REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
    --build-arg "CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    "${secret[@]}" -f Containerfile -t "$IMAGE" .
}

# The entrypoint, as the image's user, with the image's own config (buildah run applies
# the image's USER, WORKDIR and ENV); then what it ran as.
run_entrypoint() {
  CTR=$(buildah from "$IMAGE")
  buildah run --isolation chroot "$CTR" -- mooring --help
  buildah run --isolation chroot "$CTR" -- python -c \
    'import os; print("ran as uid", os.getuid(), "gid", os.getgid(), "in", os.getcwd(), "HOME", os.environ["HOME"])'
  buildah rm "$CTR" >/dev/null
  CTR=""
}

# As the chart runs it: the image's rootfs mounted read-only, a tmpfs on /tmp only, the
# image's USER and ENV; a CA and a principal certificate are written under /tmp, and
# every package of the project imports without writing bytecode.
run_readonly() {
  local ro=$WORK_DIR/ro user mnt
  local -a envs
  user=$(buildah inspect --type image --format '{{.OCIv1.Config.User}}' "$IMAGE")
  mapfile -t envs < <(buildah inspect --type image \
    --format '{{range .OCIv1.Config.Env}}{{println .}}{{end}}' "$IMAGE" | sed '/^$/d')
  CTR=$(buildah from "$IMAGE")
  mnt=$(buildah mount "$CTR")
  mkdir -p "$ro"
  mount --bind "$mnt" "$ro"
  mount -o remount,bind,ro "$ro"
  mount -t tmpfs -o size=64m,mode=1777 tmpfs "$ro/tmp"
  mount -t proc proc "$ro/proc"
  env -i "${envs[@]}" /usr/sbin/chroot --userspec="$user" "$ro" /bin/sh -ec '
    cd /var/lib/mooring
    if touch /opt/mooring/probe 2>/dev/null; then echo "root is writable"; exit 1; fi
    mooring pki init --dir /tmp/pki
    mooring pki issue principal --dir /tmp/pki --name p0 --san localhost,127.0.0.1
    mooring principal serve --help >/dev/null
    python -c "import os, proto, election._kube, election._kubeobjects, principal._server, agent._client, mooring._cli; print(\"imports ok on a read-only root as uid\", os.getuid())"
  '
}

[ "$(id -u)" = 0 ] || die "preflight failed: run as root (buildah's chroot isolation and mounts need it)"
[ -n "$VERSION" ] || die "preflight failed: no version in pyproject.toml"
if [ -n "$PIP_CA" ] && [ ! -s "$PIP_CA" ]; then die "preflight failed: PIP_CA=$PIP_CA is not a file"; fi
mkdir -p "$WORK_DIR"
MIRROR=${MIRROR:-$(apt_mirror)}

if ! command -v buildah >/dev/null || ! command -v debootstrap >/dev/null; then
  step tools "apt-get could not install buildah, debootstrap, crun" install_tools
fi
echo "build-image: $(buildah --version), mirror $MIRROR, base $BASE_IMAGE, image $IMAGE"

if [ "$REBUILD_BASE" = 1 ] || ! buildah inspect --type image "$BASE_IMAGE" >/dev/null 2>&1; then
  old_base=$(image_id "$BASE_IMAGE")
  step debootstrap "debootstrap $SUITE from $MIRROR" debootstrap_base
  step trim "could not trim the rootfs or run its python3 3.11" trim_base
  step import "buildah could not turn the rootfs into $BASE_IMAGE" import_base
  rm -rf --one-file-system "$WORK_DIR/rootfs"
  drop_replaced "$old_base" "$BASE_IMAGE"
else
  echo "build-image: base $BASE_IMAGE present (REBUILD_BASE=1 to debootstrap it again)"
fi
old_image=$(image_id "$IMAGE")
step build "buildah bud --isolation chroot of Containerfile" build_image
drop_replaced "$old_image" "$IMAGE"
step run "the image's entrypoint did not run as uid 65532 under buildah run" run_entrypoint
sed -n '1p' "$WORK_DIR/run.log"
tail -n1 "$WORK_DIR/run.log"
step readonly "the image did not work on a read-only root with a tmpfs on /tmp" run_readonly
tail -n1 "$WORK_DIR/readonly.log"
if [ -n "$ARCHIVE" ]; then
  step archive "buildah push to $ARCHIVE" buildah push -q "$IMAGE" "$ARCHIVE"
  echo "build-image: wrote $ARCHIVE ($(du -h "${ARCHIVE#*:}" | cut -f1))"
fi
for img in "$BASE_IMAGE" "$IMAGE"; do
  echo "build-image: size $(buildah images --format '{{.Name}}:{{.Tag}} {{.Size}}' "$img")"
done
