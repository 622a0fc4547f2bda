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

# ---------------------------------------------------------------------------------------------
# The benchmarks' own machinery, shared by bench/run.sh and bench/oidc.sh. The script sets
# repo, out, admin, duration, connections, threads and pids=() first; these set the rest
# (lk_bin, pgdir, pg, secret, base, lk_pid, jar, cookie, results).

# bench_tools TOOL...: dies unless each is installed; installs wrk when we are root.
bench_tools() {
  local tool
  for tool in "$@"; do
    command -v "$tool" >/dev/null || die "$tool is missing (apt-get install -y curl python3 postgresql-client postgresql-contrib)"
  done
  if ! command -v wrk >/dev/null; then
    if [ "$(id -u)" = 0 ]; then apt-get update -q && apt-get install -y -q wrk; else die "wrk is missing: apt-get install -y wrk"; fi
  fi
}

# bench_latchkey_bin: sets lk_bin, the binary measured: LATCHKEY_BIN when given (nothing is
# built), or else the release build of this tree.
bench_latchkey_bin() {
  if [ -n "${LATCHKEY_BIN:-}" ]; then
    lk_bin=$(readlink -f "$LATCHKEY_BIN")
    [ -x "$lk_bin" ] || die "LATCHKEY_BIN=$LATCHKEY_BIN is not an executable file"
    log "measuring $lk_bin (LATCHKEY_BIN): not building"
  else
    log "building the release binary"
    cargo build --release --locked --bin latchkey
    lk_bin=$repo/target/release/latchkey
  fi
}

# bench_machine: what the run ran on, into $out/machine.txt.
bench_machine() {
  {
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "nproc: $(nproc)"
    echo "cpu: $(lscpu | sed -n 's/^Model name: *//p' | head -1)"
    echo "ram: $(free -h | awk '/^Mem:/ { print $2 }')"
    echo "kernel: $(uname -r)"
    echo "rustc: $(rustc --version 2>/dev/null || echo '-')"
    if [ -n "${LATCHKEY_BIN:-}" ]; then
      echo "latchkey: the binary $LATCHKEY_BIN (given, not built here; sha256 $(sha256sum < "$lk_bin" | cut -c1-16), modified $(date -u -r "$lk_bin" '+%Y-%m-%d %H:%M UTC'))"
      echo "bench scripts: $(git rev-parse --short HEAD 2>/dev/null)"
    else
      echo "latchkey: $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet HEAD -- src templates 2>/dev/null || echo ' (+ uncommitted changes)')"
    fi
    echo "postgresql: $("$(pg_bin)/postgres" --version)"
    echo "wrk: $(wrk -v 2>&1 | head -1 | awk '{ print $2 }')"
    if command -v pgbench >/dev/null; then echo "pgbench: $(pgbench --version)"; fi
    echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "compilers running at start (rustc, cc1, ld): $(ps -e -o comm= | grep -c -E '^(rustc|cc1|cc1plus|ld|ld\.lld|mold|collect2)$' || true)"
  } > "$out/machine.txt"
  cat "$out/machine.txt" >&2
}

# bench_cleanup: stops what the script started (pids) and the private cluster (pgdir).
bench_cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -f "$pgdir/PG_VERSION" ]; then
    pg_private_stop "$pgdir"
    cp "$pgdir/postgres.log" "$out/postgres.log" 2>/dev/null || true
    rm -rf "$pgdir"
  fi
}

# bench_start_pg: a private cluster in $pgdir with pg_stat_statements (every statement,
# nested ones too), and the database `latchkey`; sets pg.
bench_start_pg() {
  log "starting a private PostgreSQL"
  local pg_port
  pg_port=$(free_port)
  pg_private_init "$pgdir"
  pg_private_start "$pgdir" "$pg_port" "-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all"
  pg=postgres://postgres@127.0.0.1:$pg_port
  psql -X -q "$pg/postgres" -c "CREATE DATABASE latchkey"
  psql -X -q "$pg/latchkey" -c "CREATE EXTENSION pg_stat_statements"
  echo "postgresql settings: $(psql -X -At "$pg/postgres" -c "SELECT string_agg(name || '=' || current_setting(name), ' ') FROM pg_settings WHERE name IN ('max_connections', 'shared_buffers', 'fsync', 'synchronous_commit')")" >> "$out/machine.txt"
}

# bench_start_latchkey: `latchkey serve` on a free port against the private cluster, mail to
# files in $out/mail, the sign-in limits raised; sets secret, base and lk_pid.
bench_start_latchkey() {
  local lk_port
  lk_port=$(free_port)
  secret=$(python3 -c 'import secrets; print(secrets.token_hex(32))')
  base=http://127.0.0.1:$lk_port
  log "starting latchkey on $base"
  mkdir -p "$out/run" "$out/mail"
  (
    cd "$out/run"
    # shellcheck disable=SC2046 # one `-u NAME` per inherited LATCHKEY_ variable
    exec env -u DATABASE_URL $(env | sed -n 's/^\(LATCHKEY_[A-Z_]*\)=.*/-u \1/p') \
      DATABASE_URL="$pg/latchkey" \
      LATCHKEY_BIND="127.0.0.1:$lk_port" \
      LATCHKEY_SECRET_KEY="$secret" \
      LATCHKEY_ADMINS="$admin" \
      LATCHKEY_EMAIL="file:$out/mail" \
      LATCHKEY_LOGIN_RATE=1000000/1s \
      LATCHKEY_EMAIL_RATE=1000000/1s \
      RUST_LOG=info \
      "$lk_bin" serve
  ) > "$out/latchkey.log" 2>&1 &
  lk_pid=$!
  pids+=("$lk_pid")
  wait_http "$base/readyz" 200 60 || die "latchkey did not start; see $out/latchkey.log"
}

# The command line against the benchmark's Latchkey (same database and secret key).
lk_cli() {
  DATABASE_URL="$pg/latchkey" LATCHKEY_SECRET_KEY="$secret" LATCHKEY_DATA_DIR="$out/run/cli" RUST_LOG=warn \
    "$lk_bin" "$@"
}

# bench_sign_in: $admin signs in once (link from the .eml, confirmed with curl); sets jar and
# cookie (the `Cookie:` header of the signed-in browser).
bench_sign_in() {
  log "signing in once (link from the .eml, confirmed with curl)"
  jar=$out/cookies.txt
  lk_sign_in "$base" "$admin" "$out/mail" "$jar"
  cookie=$(cookie_header "$jar")
  [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Cookie: $cookie" "$base/")" = 200 ] || die "signed-in GET / is not 200"
}

# wrk_summary FILE: "req/s p50_ms p99_ms requests non_2xx_3xx socket_errors" from
# `wrk --latency` output.
wrk_summary() {
  awk '
    function ms(v) {
      if (v ~ /us$/) return substr(v, 1, length(v) - 2) / 1000
      if (v ~ /ms$/) return substr(v, 1, length(v) - 2) + 0
      if (v ~ /s$/)  return substr(v, 1, length(v) - 1) * 1000
      return v
    }
    /^ +50%/ { p50 = ms($2) } /^ +99%/ { p99 = ms($2) }
    /requests in/ { n = $1 } /Non-2xx or 3xx/ { bad = $5 } /^Requests\/sec/ { rps = $2 }
    /Socket errors:/ { gsub(",", ""); sock = $4 + $6 + $8 + $10 }
    END { printf "%.0f %.2f %.2f %d %d %d\n", rps, p50, p99, n, bad, sock }' "$1"
}

# proc_ticks PID...: user + system CPU time of the processes, in clock ticks.
proc_ticks() {
  local pid sum=0 t
  for pid in "$@"; do
    t=$(awk '{ print $14 + $15 }' "/proc/$pid/stat" 2>/dev/null) || t=0
    sum=$((sum + ${t:-0}))
  done
  echo "$sum"
}

# pg_ticks: the CPU time of the private cluster's processes (the postmaster's children: the
# backends of Latchkey's pool, the WAL writer, the checkpointer...), in clock ticks.
pg_ticks() {
  local postmaster
  postmaster=$(head -1 "$pgdir/postmaster.pid")
  # shellcheck disable=SC2046
  proc_ticks "$postmaster" $(ps --ppid "$postmaster" -o pid=)
}

# machine_busy_ticks: the CPU time all processes of the machine spent (user, nice, system; not
# the interrupts, which the network's softirqs mostly are and no process is charged for), in
# clock ticks.
machine_busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 }' /proc/stat; }

# bench_results_init: the results table's header (and an empty SQL table).
bench_results_init() {
  results=$out/results.tsv
  printf 'name\treq_s\tp50_ms\tp99_ms\trequests\tnon_2xx_3xx\tlatchkey_vmhwm_kb\tloadavg\tlatchkey_cpu_us\tpostgres_cpu_us\tsocket_errors\twrk_cpu_us\tothers_cpu_pct\n' > "$results"
  : > "$out/sql.tsv"
  script_args=()
  bench_hook=
}

# bench NAME URL [wrk options...]: a 3 s warm-up, then the measured run of $duration. The
# array script_args, when set, goes after the URL (arguments for a wrk Lua script). When
# bench_hook names a function, it is called with `warmup` before the warm-up and with `run`
# before the measured run (it may change script_args). Besides wrk's numbers, each row has the
# CPU time the latchkey process and the PostgreSQL cluster spent per request of the measured
# run (µs, user + system, from /proc), what wrk itself spent per request, and the share of the
# machine (all its cores) that everything else took meanwhile: other people's builds, say.
bench() {
  local name=$1 url=$2 load lk_t pg_t all_t started wall wrk_cpu rps p50 p99 n bad sock
  local TIMEFORMAT='%U %S'
  shift 2
  if [ -n "$bench_hook" ]; then "$bench_hook" warmup; fi
  log "wrk: $name ($connections connections, $duration)"
  wrk -t"$threads" -c"$connections" -d3s "$@" "$url" "${script_args[@]}" > "$out/warmup-$name.txt"
  if [ -n "$bench_hook" ]; then "$bench_hook" run; fi
  load=$(cut -d' ' -f1 /proc/loadavg)
  lk_t=$(proc_ticks "$lk_pid")
  pg_t=$(pg_ticks)
  all_t=$(machine_busy_ticks)
  started=$(date +%s.%N)
  { time wrk -t"$threads" -c"$connections" -d"$duration" --latency "$@" "$url" "${script_args[@]}" > "$out/$name.txt"; } 2> "$out/$name.stderr"
  wall=$(awk -v s="$started" -v e="$(date +%s.%N)" 'BEGIN { print e - s }')
  lk_t=$(( $(proc_ticks "$lk_pid") - lk_t ))
  pg_t=$(( $(pg_ticks) - pg_t ))
  all_t=$(( $(machine_busy_ticks) - all_t ))
  wrk_cpu=$(tail -1 "$out/$name.stderr")
  sed '$d' "$out/$name.stderr" >&2
  read -r rps p50 p99 n bad sock < <(wrk_summary "$out/$name.txt")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$rps" "$p50" "$p99" "$n" "$bad" \
    "$(vm_hwm "$lk_pid")" "$load" \
    "$(awk -v lk="$lk_t" -v pg="$pg_t" -v all="$all_t" -v wrk="$wrk_cpu" -v wall="$wall" \
         -v hz="$(getconf CLK_TCK)" -v cores="$(nproc)" -v n="$n" -v sock="$sock" 'BEGIN {
         split(wrk, w, " "); per = n ? 1e6 / n : 0
         others = all / hz - lk / hz - pg / hz - (w[1] + w[2])
         printf "%.1f\t%.1f\t%d\t%.1f\t%.0f", lk / hz * per, pg / hz * per, sock, (w[1] + w[2]) * per,
           (others > 0 ? 100 * others / (wall * cores) : 0) }')" >> "$results"
}

# sql_per_request NAME: the statements the latchkey database ran since the last reset, per
# request of the run NAME (everything counts: the listener's heartbeat, the dashboard's
# few-seconds numbers, the sweeper), and the busiest statements, into $out/sql-NAME.txt.
sql_reset() { psql -X -q -At "$pg/latchkey" -c "SELECT pg_stat_statements_reset()" > /dev/null; }
sql_per_request() {
  local name=$1 requests calls
  requests=$(awk -F'\t' -v n="$name" '$1 == n { print $5 }' "$results")
  psql -X -At -F $'\t' "$pg/latchkey" -c "SELECT calls, left(regexp_replace(query, '\s+', ' ', 'g'), 100) FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = 'latchkey') AND query NOT LIKE '%pg_stat_statements%' ORDER BY calls DESC" > "$out/sql-all-$name.txt"
  head -8 "$out/sql-all-$name.txt" > "$out/sql-$name.txt"
  calls=$(awk -F'\t' '{ s += $1 } END { print s + 0 }' "$out/sql-all-$name.txt")
  printf '%s\t%s\t%s\n' "$name" "$calls" "$requests" >> "$out/sql.tsv"
}
