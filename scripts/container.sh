#!/usr/bin/env bash
# CI: the container image as a deployment gets it, built where no image registry is
# reachable. A Debian base is made locally with debootstrap, the runtime stage of
# `Containerfile` takes the release binary built on the host (`--target from-host`), and the
# image is run against PostgreSQL (127.0.0.1:5432, or a private cluster) and signed in
# through with curl and the `file:` mail backend. Then it checks the HEALTHCHECK, that `podman stop` (SIGTERM) exits 0,
# and prints the image's size and its start-up time. LATCHKEY_BIN: a binary to use instead
# of a fresh release build.
#
# Podman as it works on these machines (as root, without systemd): runtime runc, cgroup
# manager cgroupfs, events to a file, no default ulimits, host networking.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh

repo=$PWD
out=$repo/target/container
base=localhost/latchkey-base:bookworm
image=localhost/latchkey:ci
name=latchkey-ci-$$
database=latchkey_container_$$
admin=ci@example.org

for tool in podman debootstrap curl psql python3; do
  command -v "$tool" >/dev/null || die "$tool is missing (apt-get install -y podman debootstrap curl postgresql-client)"
done
rm -rf "$out"
mkdir -p "$out/mail"

# PostgreSQL on 127.0.0.1:5432 when it answers; otherwise a private cluster of this script's
# own on a free port (bench/lib.sh), stopped at the end.
pg_port=5432
private_pg=
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  private_pg=$out/pg
  pg_port=$(free_port)
  log "no PostgreSQL on 127.0.0.1:5432: a private cluster on port $pg_port"
  pg_private_init "$private_pg"
  pg_private_start "$private_pg" "$pg_port"
fi
cat >"$out/containers.conf" <<'EOF'
[containers]
default_ulimits = []
EOF
export CONTAINERS_CONF=$out/containers.conf
pm() { podman --runtime runc --cgroup-manager cgroupfs --events-backend file "$@"; }

cleanup() {
  pm rm -f "$name" >/dev/null 2>&1 || true
  psql -q -h 127.0.0.1 -p "$pg_port" -U postgres -c "DROP DATABASE IF EXISTS $database WITH (FORCE)" >/dev/null 2>&1 || true
  if [ -n "$private_pg" ]; then pg_private_stop "$private_pg"; fi
}
trap cleanup EXIT

# The base: Debian 12 with the libraries the binary links, made here (kept between runs).
if ! pm image exists "$base"; then
  log "making the Debian base with debootstrap"
  rootfs=$out/rootfs
  debootstrap --variant=minbase --include=libpq5,libssl3,ca-certificates \
    bookworm "$rootfs" http://deb.debian.org/debian >"$out/debootstrap.log"
  # As Debian's slim images are: no package cache, lists, documentation or locales.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
    "$rootfs"/usr/share/locale/*
  tar -C "$rootfs" -c . | pm import - "$base" >/dev/null
  rm -rf "$rootfs"
fi

lk_bin=${LATCHKEY_BIN:-$repo/target/release/latchkey}
if [ -z "${LATCHKEY_BIN:-}" ]; then
  # A no-op after the drills, which build the same binary.
  log "building the release binary"
  cargo build --release --locked --bin latchkey
fi

# The runtime stage needs nothing of the checkout but the binary: a context of just that.
log "building $image (runtime stage, the host's binary)"
context=$out/context
mkdir -p "$context/target/release"
cp Containerfile "$context/"
cp "$lk_bin" "$context/target/release/latchkey"
pm build --quiet --network host --format docker --target from-host \
  --build-arg RUNTIME_IMAGE="$base" -t "$image" -f "$context/Containerfile" "$context" >/dev/null
size=$(pm image inspect --format '{{.Size}}' "$image")

psql -q -h 127.0.0.1 -p "$pg_port" -U postgres -c "CREATE DATABASE $database" postgres >/dev/null
port=$(free_port)
base_url=http://127.0.0.1:$port
# The image's user (uid 10001) writes the mail files.
chown 10001 "$out/mail"
started=$(date +%s.%N)
# The HEALTHCHECK is run by hand below: with no systemd there is no timer to schedule it, and
# Podman says so on standard error at each run and stop (kept in podman.log).
pm run -d --name "$name" --network host \
  -e DATABASE_URL="postgres://postgres@127.0.0.1:$pg_port/$database" \
  -e LATCHKEY_BIND="127.0.0.1:$port" \
  -e LATCHKEY_PUBLIC_URL="$base_url" \
  -e LATCHKEY_EMAIL=file:/mail \
  -e LATCHKEY_ADMINS="$admin" \
  -e LATCHKEY_SECRET_KEY="$(python3 -c 'import secrets; print(secrets.token_hex(32))')" \
  -v "$out/mail:/mail" \
  "$image" >/dev/null 2>>"$out/podman.log" || { cat "$out/podman.log" >&2; die "podman run failed"; }
wait_http "$base_url/readyz" 200 60 || { pm logs "$name" >&2; die "the container never became ready"; }
ready=$(python3 -c "print(f'{$(date +%s.%N) - $started:.2f}')")

log "signing in through the container"
jar=$out/cookies.txt
lk_sign_in "$base_url" "$admin" "$out/mail" "$jar"
status=$(curl -s -o "$out/dashboard.html" -w '%{http_code}' -b "$jar" "$base_url/")
[ "$status" = 200 ] || die "the dashboard answered $status after signing in"
grep -q "$admin" "$out/dashboard.html" || die "the dashboard does not name $admin"

pm healthcheck run "$name" >/dev/null || die "the HEALTHCHECK failed"
user=$(pm exec "$name" id -u)
[ "$user" = 10001 ] || die "the server runs as uid $user, not the image's own user"

log "stopping it (SIGTERM)"
pm stop -t 15 "$name" >/dev/null 2>>"$out/podman.log" || { cat "$out/podman.log" >&2; die "podman stop failed"; }
code=$(pm inspect --format '{{.State.ExitCode}}' "$name")
pm logs "$name" >"$out/latchkey.log" 2>&1
[ "$code" = 0 ] || { cat "$out/latchkey.log" >&2; die "the container exited $code on SIGTERM"; }
if grep -E '^\[[^]]* (WARN|ERROR) ' "$out/latchkey.log"; then
  die "the container logged a warning or an error"
fi

printf 'container: image %s is %s MB; ready %s s after `podman run`; signed in; healthy; exit 0 on SIGTERM\n' \
  "$image" "$((size / 1000000))" "$ready"
