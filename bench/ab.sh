#!/usr/bin/env bash
# Two builds side by side, alternating, to tell a change from the machine's variance:
#   bench/ab.sh BEFORE AFTER      (commits; AFTER defaults to HEAD)
# Each commit is built (release) from a clean checkout of it, both run against one private
# PostgreSQL (a database each), and the rounds alternate BEFORE and AFTER on the three paths
# that every request of a signed-in team takes: GET /login, a signed-in GET / and a signed-in
# GET /auth/check for an app that admits the member. Each measurement is a 3 s warm-up and
# then BENCH_DURATION of `wrk -t BENCH_THREADS -c BENCH_CONNECTIONS`; BENCH_ROUNDS rounds.
# Results: target/bench-ab/results.md (one row per round, and the medians).
#
# Settings: BENCH_DURATION (10s), BENCH_CONNECTIONS (64), BENCH_THREADS (2), BENCH_ROUNDS (3).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh

[ $# -ge 1 ] || die "usage: bench/ab.sh BEFORE [AFTER]"
before=$(git rev-parse --short "$1")
after=$(git rev-parse --short "${2:-HEAD}")
duration=${BENCH_DURATION:-10s}
connections=${BENCH_CONNECTIONS:-64}
threads=${BENCH_THREADS:-2}
rounds=${BENCH_ROUNDS:-3}
repo=$PWD
out=$repo/target/bench-ab
admin=bench@example.org

for tool in curl python3 psql; do
  command -v "$tool" >/dev/null || die "$tool is missing (apt-get install -y curl python3 postgresql-client)"
done
if ! command -v wrk >/dev/null; then
  if [ "$(id -u)" = 0 ]; then apt-get update -q && apt-get install -y -q wrk; else die "wrk is missing: apt-get install -y wrk"; fi
fi

rm -rf "$out"
mkdir -p "$out/bin"

# Each commit from a checkout of its own (uncommitted changes never leak in), built into one
# shared target directory so the dependencies are compiled once.
for commit in "$before" "$after"; do
  log "building $commit (release)"
  tree=$out/src-$commit
  git worktree add -q --detach "$tree" "$commit"
  cargo build --release --locked --bin latchkey --manifest-path "$tree/Cargo.toml" \
    --target-dir "$repo/target/bench-ab-build"
  cp "$repo/target/bench-ab-build/release/latchkey" "$out/bin/latchkey-$commit"
  git worktree remove --force "$tree"
done

pids=()
declare -A lkpid=()
pgdir=$out/pg
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -f "$pgdir/PG_VERSION" ]; then pg_private_stop "$pgdir"; rm -rf "$pgdir"; fi
}
trap cleanup EXIT

log "starting a private PostgreSQL"
pg_port=$(free_port)
pg_private_init "$pgdir"
pg_private_start "$pgdir" "$pg_port"
pg=postgres://postgres@127.0.0.1:$pg_port
secret=$(python3 -c 'import secrets; print(secrets.token_hex(32))')

declare -A base cookie
for commit in "$before" "$after"; do
  psql -X -q "$pg/postgres" -c "CREATE DATABASE lk_$commit"
  port=$(free_port)
  base[$commit]=http://127.0.0.1:$port
  mkdir -p "$out/run-$commit/mail"
  (
    cd "$out/run-$commit"
    exec env -u DATABASE_URL $(env | sed -n 's/^\(LATCHKEY_[A-Z_]*\)=.*/-u \1/p') \
      DATABASE_URL="$pg/lk_$commit" \
      LATCHKEY_DATA_DIR="$out/run-$commit/data" \
      LATCHKEY_BIND="127.0.0.1:$port" \
      LATCHKEY_SECRET_KEY="$secret" \
      LATCHKEY_ADMINS="$admin" \
      LATCHKEY_EMAIL="file:$out/run-$commit/mail" \
      LATCHKEY_LOGIN_RATE=1000000/1s \
      LATCHKEY_EMAIL_RATE=1000000/1s \
      RUST_LOG=warn \
      "$out/bin/latchkey-$commit" serve
  ) > "$out/latchkey-$commit.log" 2>&1 &
  pids+=($!)
  lkpid[$commit]=$!
  wait_http "${base[$commit]}/readyz" 200 60 || die "$commit did not start; see $out/latchkey-$commit.log"
  jar=$out/cookies-$commit.txt
  lk_sign_in "${base[$commit]}" "$admin" "$out/run-$commit/mail" "$jar"
  cookie[$commit]=$(cookie_header "$jar")
  DATABASE_URL="$pg/lk_$commit" LATCHKEY_SECRET_KEY="$secret" LATCHKEY_DATA_DIR="$out/run-$commit/cli" RUST_LOG=warn \
    "$out/bin/latchkey-$commit" apps add wiki https://wiki.bench.test --roles admin,member > /dev/null
  for path in / /auth/check; do
    status=$(curl -s -o /dev/null -w '%{http_code}' -H "Cookie: ${cookie[$commit]}" \
      -H "X-Original-URL: https://wiki.bench.test/page" "${base[$commit]}$path")
    [ "$status" = 200 ] || die "$commit: signed-in GET $path answered $status"
  done
done

# measure COMMIT CASE: prints req/s and the latchkey process's CPU time per request in µs
# (user + system, from /proc): on a machine others share, req/s follows their load, while the
# CPU a request costs hardly does.
measure() {
  local commit=$1 case=$2 url headers=()
  case $case in
    get_login) url=${base[$commit]}/login ;;
    get_dashboard) url=${base[$commit]}/; headers=(-H "Cookie: ${cookie[$commit]}") ;;
    get_auth_check)
      url=${base[$commit]}/auth/check
      headers=(-H "Cookie: ${cookie[$commit]}" -H "X-Original-URL: https://wiki.bench.test/page") ;;
  esac
  wrk -t"$threads" -c"$connections" -d3s "${headers[@]}" "$url" > /dev/null
  local ticks_before ticks_after report
  ticks_before=$(awk '{ print $14 + $15 }' "/proc/${lkpid[$commit]}/stat")
  report=$(wrk -t"$threads" -c"$connections" -d"$duration" "${headers[@]}" "$url")
  ticks_after=$(awk '{ print $14 + $15 }' "/proc/${lkpid[$commit]}/stat")
  awk -v ticks=$((ticks_after - ticks_before)) -v hz="$(getconf CLK_TCK)" '
    / requests in / { requests = $1 }
    /^Requests\/sec/ { rps = $2 }
    END { printf "%.0f %.2f\n", rps, ticks / hz * 1e6 / requests }' <<<"$report"
}

results=$out/results.tsv
printf 'round\tcase\t%s\t%s\n' "$before" "$after" > "$results"
for round in $(seq 1 "$rounds"); do
  for case in get_login get_dashboard get_auth_check; do
    # Alternate which build goes first, so neither always meets a warmer machine.
    if (( round % 2 )); then order=("$before" "$after"); else order=("$after" "$before"); fi
    declare -A rps=()
    for commit in "${order[@]}"; do
      log "round $round: $case on $commit"
      rps[$commit]=$(measure "$commit" "$case")
    done
    printf '%s\t%s\t%s\t%s\n' "$round" "$case" "${rps[$before]}" "${rps[$after]}" >> "$results"
  done
done

python3 - "$results" "$out/results.md" "$(nproc)" "$(lscpu | sed -n 's/^Model name: *//p' | head -1)" <<'PY'
import csv, statistics, sys
rows = list(csv.reader(open(sys.argv[1]), delimiter="\t"))
head, body = rows[0], rows[1:]
before, after = head[2], head[3]
# Each cell: "req/s cpu-us-per-request".
cell = lambda text: tuple(float(x) for x in text.split())
out = [f"A/B on {sys.argv[3]} cores ({sys.argv[4]}), alternating rounds: req/s, and the latchkey",
       "process's CPU time per request (µs)", "",
       f"| round | case | `{before}` req/s | `{after}` req/s | `{before}` µs | `{after}` µs |",
       "|---|---|---:|---:|---:|---:|"]
for r in body:
    b, a = cell(r[2]), cell(r[3])
    out.append(f"| {r[0]} | {r[1]} | {b[0]:,.0f} | {a[0]:,.0f} | {b[1]:.2f} | {a[1]:.2f} |")
out += ["", f"| case | median req/s `{before}` → `{after}` | | median µs/request `{before}` → `{after}` | |",
        "|---|---|---:|---|---:|"]
for case in dict.fromkeys(r[1] for r in body):
    b = [cell(r[2]) for r in body if r[1] == case]
    a = [cell(r[3]) for r in body if r[1] == case]
    rb, ra = statistics.median(x[0] for x in b), statistics.median(x[0] for x in a)
    cb, ca = statistics.median(x[1] for x in b), statistics.median(x[1] for x in a)
    out.append(f"| {case} | {rb:,.0f} → {ra:,.0f} | {ra / rb:.1%} | {cb:.2f} → {ca:.2f} | {ca / cb:.1%} |")
open(sys.argv[2], "w").write("\n".join(out) + "\n")
print("\n".join(out))
PY
log "done: $out/results.md"
