#!/usr/bin/env bash
# The container image, built and tried where no image registry is reachable: a Debian
# bookworm base made with debootstrap (from Debian's package mirror), the runtime stage of the
# Containerfile with the release binary built on the host (`--target runtime-host`), run with
# Debian's podman against PostgreSQL, and signed in through with the `file:` mail backend.
# Says the image's size and how long it took to answer /readyz. Needs root (debootstrap).
# podman's own complaints (no systemd for health-check timers here) go to
# target/container/podman.log.
#
# Run by .ci/run; on its own: scripts/container.sh (after `cargo build --release`).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh

[ "$(id -u)" = 0 ] || die "run as root (debootstrap and podman's rootful storage)"
binary=target/release/latchkey
[ -x "$binary" ] || die "$binary is missing: cargo build --release --locked --bin latchkey"

if ! command -v podman >/dev/null || ! command -v debootstrap >/dev/null; then
  apt-get update -q && apt-get install -y -q podman debootstrap runc
fi

work=$PWD/target/container
mkdir -p "$work"
# The settings that work on these machines (no systemd, no cgroup delegation, no ulimit
# raising): runc, cgroupfs, a file for events, and the vfs storage driver.
export CONTAINERS_CONF=$work/containers.conf CONTAINERS_STORAGE_CONF=$work/storage.conf
cat > "$CONTAINERS_CONF" <<EOF
[containers]
default_ulimits = []
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
cat > "$CONTAINERS_STORAGE_CONF" <<EOF
[storage]
driver = "vfs"
runroot = "$work/run"
graphroot = "$work/storage"
EOF
podman=(podman --cgroup-manager=cgroupfs)

base=localhost/latchkey-base:bookworm
if ! "${podman[@]}" image exists "$base"; then
  log "debootstrap: a minimal Debian bookworm with what the binary links and the health check needs"
  rm -rf "$work/rootfs"
  debootstrap --variant=minbase --include=ca-certificates,curl,libpq5,libssl3 \
    bookworm "$work/rootfs" http://deb.debian.org/debian > "$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log"; die "debootstrap failed"; }
  rm -rf "$work/rootfs/var/cache/apt/archives"/*.deb "$work/rootfs/var/lib/apt/lists"/*
  tar -C "$work/rootfs" -c . | "${podman[@]}" import - "$base" > /dev/null
  rm -rf "$work/rootfs"
fi

log "podman build --target runtime-host"
"${podman[@]}" build --format docker --target runtime-host --build-arg "RUNTIME_BASE=$base" \
  -t localhost/latchkey:ci -f Containerfile . > "$work/build.log" 2>&1 \
  || { tail -30 "$work/build.log"; die "the image did not build"; }
size=$("${podman[@]}" image inspect localhost/latchkey:ci --format '{{.Size}}')
user=$("${podman[@]}" image inspect localhost/latchkey:ci --format '{{.Config.User}}')
[ "$user" = latchkey ] || die "the image runs as ${user:-root}, not the latchkey account"
health=$("${podman[@]}" image inspect localhost/latchkey:ci --format '{{json .Config.Healthcheck}}')
grep -q readyz <<<"$health" || die "no HEALTHCHECK on /readyz: $health"

# PostgreSQL: a private cluster on a free port, so the shared server is never touched.
pgdir=$work/pg
pg_port=$(free_port)
port=$(free_port)
name=latchkey-ci-$$
cleanup() {
  "${podman[@]}" rm -f "$name" > /dev/null 2>> "$work/podman.log" || true
  pg_private_stop "$pgdir"
  rm -rf "$pgdir" "$work/data"
}
trap cleanup EXIT
rm -rf "$pgdir"
pg_private_init "$pgdir"
pg_private_start "$pgdir" "$pg_port"
as_pg "$(pg_bin)/psql" -X -q -h 127.0.0.1 -p "$pg_port" -U postgres -c "CREATE DATABASE latchkey" postgres

# The data folder is the image's account's, as a volume would be.
mkdir -p "$work/data/mail"
uid=$("${podman[@]}" run --rm --health-interval disable --entrypoint /usr/bin/id localhost/latchkey:ci -u 2>> "$work/podman.log")
chown -R "$uid" "$work/data"
admin=container@example.org
started=$(date +%s.%N)
# Host networking reaches the cluster on loopback; no systemd here, so the health check has
# no timer and is run by hand below.
"${podman[@]}" run -d --name "$name" --network host --health-interval disable \
  -v "$work/data:/var/lib/latchkey" \
  -e "DATABASE_URL=postgres://postgres@127.0.0.1:$pg_port/latchkey" \
  -e "LATCHKEY_BIND=127.0.0.1:$port" \
  -e "LATCHKEY_PUBLIC_URL=http://127.0.0.1:$port" \
  -e "LATCHKEY_EMAIL=file:/var/lib/latchkey/mail" \
  -e "LATCHKEY_ADMINS=$admin" \
  localhost/latchkey:ci > /dev/null 2>> "$work/podman.log"
base_url=http://127.0.0.1:$port
wait_http "$base_url/readyz" 200 60 || { "${podman[@]}" logs "$name" | tail -30; die "the container did not become ready"; }
ready=$(python3 -c "import time; print(f'{time.time() - $started:.1f}')")

log "signing in through the container (the link from the .eml it wrote)"
lk_sign_in "$base_url" "$admin" "$work/data/mail" "$work/cookies.txt"
cookie=$(cookie_header "$work/cookies.txt")
page=$(curl -s -H "Cookie: $cookie" "$base_url/")
grep -q "$admin" <<<"$page" || die "the dashboard does not show $admin signed in"
"${podman[@]}" healthcheck run "$name" > /dev/null || die "the image's health check failed"

"${podman[@]}" stop -t 15 "$name" > /dev/null 2>> "$work/podman.log"
code=$("${podman[@]}" inspect "$name" --format '{{.State.ExitCode}}')
[ "$code" = 0 ] || { "${podman[@]}" logs "$name" | tail -20; die "the container stopped with exit code $code"; }

printf 'container: image %s MB, ready in %s s, signed in as %s, stopped with exit code 0\n' \
  "$((size / 1000000))" "$ready" "$admin"
