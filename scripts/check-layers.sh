#!/usr/bin/env bash
# The import rule of docs/architecture.md: a floor imports only the floors below it. Fails,
# naming each line, when a module reaches up (a `crate::` path in code, not in a comment).
set -euo pipefail
cd "$(dirname "$0")/.."

status=0
# forbid FILES_OR_DIRS... -- ROOMS...: none of the files may name crate::ROOM.
forbid() {
  local paths=() rooms=()
  while [ "$1" != "--" ]; do paths+=("$1"); shift; done
  shift
  rooms=("$@")
  local present=()
  for path in "${paths[@]}"; do [ -e "$path" ] && present+=("$path"); done
  paths=("${present[@]}")
  local pattern
  pattern="crate::($(IFS='|'; echo "${rooms[*]}"))\\b"
  local hits
  hits=$(grep -rnE "$pattern" "${paths[@]}" --include='*.rs' | grep -vE '^[^:]+:[0-9]+:[[:space:]]*//' || true)
  if [ -n "$hits" ]; then
    echo "check-layers: ${paths[*]} must not import ${rooms[*]}:" >&2
    echo "$hits" >&2
    status=1
  fi
}

above_http="web|middleware|routes|startup|cli|state"
above_rooms="session|signin|forward_auth|passkeys|dashboard|team"

# Values parsed at the edge, and the primitives under everything.
forbid src/domain src/crypto.rs src/private_fs.rs -- \
  "$above_http|$above_rooms|audit|db|models|mail|settings|logging|keys|schema"
# The database and the audit just above it (every model writes its audit rows in its own
# transaction, so the audit imports no model).
forbid src/db src/schema.rs src/audit -- "$above_http|$above_rooms|models|mail"
# The tables, and the services every room uses.
forbid src/models src/logging src/keys.rs src/settings.rs src/mail src/metrics.rs -- \
  "$above_http|$above_rooms"
# The rooms: sessions, sign-in, forward auth, passkeys, the dashboard's numbers, the team's
# administration, purge.
forbid src/session src/signin src/forward_auth src/passkeys src/dashboard src/team src/purge.rs -- \
  "$above_http"
# HTTP below the route table: pages, errors, the policy, then the middleware.
forbid src/web -- "middleware|routes|startup|cli"
forbid src/middleware -- "routes|startup|cli"

if [ "$status" = 0 ]; then
  echo "check-layers: no module imports a floor above its own"
fi
exit "$status"
