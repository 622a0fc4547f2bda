# Helpers shared by bench/run.sh and scripts/drills.sh (sourced, not run).
# They need: curl, python3, psql and the PostgreSQL server binaries (initdb, pg_ctl).

# shellcheck shell=bash

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# The newest installed PostgreSQL's bin directory (Debian keeps them off the PATH).
pg_bin() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
  if [ -n "$dir" ] && [ -x "$dir/initdb" ]; then echo "$dir"; return; fi
  dir=$(dirname "$(readlink -f "$(command -v initdb 2>/dev/null || echo /nonexistent)")")
  [ -x "$dir/initdb" ] || die "PostgreSQL server binaries not found: apt-get install -y postgresql"
  echo "$dir"
}

# PostgreSQL refuses to run as root: run its programs as `postgres` when we are root.
as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# pg_private_init DIR: a new cluster (trust auth on loopback, user postgres) in DIR.
pg_private_init() {
  local dir=$1
  mkdir -p "$dir"
  [ "$(id -u)" = 0 ] && chown postgres: "$dir" && chmod 700 "$dir"
  as_pg "$(pg_bin)/initdb" -D "$dir" -U postgres --auth=trust -E UTF8 --locale=C >/dev/null
}

# pg_private_start DIR PORT [OPTIONS]: starts it on 127.0.0.1:PORT (TCP only), with more
# server OPTIONS (`-c name=value ...`) if given, and waits until it accepts.
pg_private_start() {
  local dir=$1 port=$2 options=${3:-}
  as_pg "$(pg_bin)/pg_ctl" start -D "$dir" -l "$dir/postgres.log" -w -t 60 \
    -o "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories='' $options" >/dev/null
}

# pg_private_stop DIR [MODE]: fast by default; `immediate` is a crash.
pg_private_stop() {
  local dir=$1 mode=${2:-fast}
  as_pg "$(pg_bin)/pg_ctl" stop -D "$dir" -m "$mode" -w -t 60 >/dev/null 2>&1 || true
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_http URL STATUS SECONDS: polls until URL answers STATUS; fails after SECONDS.
wait_http() {
  local url=$1 want=$2 limit=$3 start
  start=$(date +%s)
  until [ "$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$url")" = "$want" ]; do
    (( $(date +%s) - start < limit )) || return 1
    sleep 0.1
  done
}

# eml_link FILE: the sign-in link in a sign-in mail (.eml), transfer encoding undone.
eml_link() {
  python3 - "$1" <<'PY'
import email, re, sys
from email import policy
msg = email.message_from_binary_file(open(sys.argv[1], "rb"), policy=policy.default)
text = msg.get_body(preferencelist=("plain",)).get_content()
match = re.search(r"https?://\S+/auth/verify\?token=\S+", text)
if not match:
    sys.exit("no sign-in link in " + sys.argv[1])
print(match.group(0))
PY
}

# newest_mail_to DIR EMAIL MARKER SECONDS: waits for a sign-in mail to EMAIL in DIR newer
# than the file MARKER, and prints its path.
newest_mail_to() {
  local dir=$1 email=$2 marker=$3 limit=$4 start file
  start=$(date +%s)
  while :; do
    file=$(find "$dir" -name '*.eml' -newer "$marker" -print0 2>/dev/null \
      | xargs -0 -r grep -l -i "^To: .*$email" 2>/dev/null \
      | xargs -r grep -l "Subject: .*sign-in link" 2>/dev/null | sort | tail -1)
    [ -n "$file" ] && { echo "$file"; return 0; }
    (( $(date +%s) - start < limit )) || return 1
    sleep 0.1
  done
}

# csrf_of URL JAR: fetches a page with the cookie jar and prints its CSRF token.
csrf_of() {
  curl -s -c "$2" -b "$2" "$1" | sed -n 's/.*<meta name="csrf-token" content="\([^"]*\)".*/\1/p' | head -1
}

# lk_sign_in BASE EMAIL MAILDIR JAR: the whole sign-in by link with curl, as a browser does
# it (the same cookie jar asks for the link and confirms it). The session cookie ends up in JAR.
lk_sign_in() {
  local base=$1 email=$2 maildir=$3 jar=$4 marker csrf file link token page status
  marker=$(mktemp)
  touch -d '-1 second' "$marker"
  csrf=$(csrf_of "$base/login" "$jar")
  [ -n "$csrf" ] || die "no CSRF token on $base/login"
  status=$(curl -s -o /dev/null -w '%{http_code}' -c "$jar" -b "$jar" \
    --data-urlencode "email=$email" --data-urlencode "csrf_token=$csrf" "$base/login")
  [ "$status" = 200 ] || die "POST /login for $email answered $status"
  file=$(newest_mail_to "$maildir" "$email" "$marker" 20) || die "no sign-in mail to $email in $maildir"
  rm -f "$marker"
  link=$(eml_link "$file")
  page=$(curl -s -c "$jar" -b "$jar" "$link")
  csrf=$(sed -n 's/.*<meta name="csrf-token" content="\([^"]*\)".*/\1/p' <<<"$page" | head -1)
  token=${link#*token=}
  # The token is already form-encoded in the link.
  status=$(curl -s -o /dev/null -w '%{http_code}' -c "$jar" -b "$jar" \
    --data "token=$token" --data-urlencode "csrf_token=$csrf" "$base/auth/verify")
  [ "$status" = 303 ] || die "POST /auth/verify for $email answered $status"
}

# lk_open_app BASE JAR NAME ORIGIN: opens the app's own session for the member signed in
# in JAR (`/auth/app`, then the app's callback as its proxy would ask it, naming the app);
# prints the app cookie as `name=value`.
lk_open_app() {
  local base=$1 jar=$2 name=$3 origin=$4 location query cookie
  location=$(curl -s -o /dev/null -w '%{redirect_url}' -b "$jar" \
    --get --data-urlencode "app=$name" --data-urlencode "rd=$origin/" "$base/auth/app")
  query=${location#"$origin/.latchkey/callback?"}
  [ "$query" != "$location" ] || die "/auth/app did not send $name to its callback: $location"
  cookie=$(curl -s -o /dev/null -D - -H "X-Latchkey-App: $name" "$base/.latchkey/callback?$query" \
    | sed -n 's/^[Ss]et-[Cc]ookie: \([^;]*\).*/\1/p' | head -1)
  [ -n "$cookie" ] || die "the callback of $name set no cookie"
  printf '%s\n' "$cookie"
}

# cookie_header JAR: the jar's cookies as one `Cookie:` header value (HttpOnly ones included).
cookie_header() {
  sed -e 's/^#HttpOnly_//' -e '/^#/d' -e '/^$/d' "$1" | awk -F'\t' '{ printf "%s%s=%s", sep, $6, $7; sep="; " }'
}

# vm_hwm PID: peak resident set size in kB.
vm_hwm() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }
