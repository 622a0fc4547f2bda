#!/usr/bin/env bash
# The newcomer check: what a new user does on a fresh machine, run by .ci/run.
#
#   1. As root: clone the repository into a fresh folder of mode 0700 and run the README's
#      run command there exactly as written (`cargo run --release`, no settings), wait for
#      /readyz, sign in once through the link the console backend prints, stop it with
#      SIGINT (Ctrl-C) and check that it exits 0 and stopped its private cluster.
#   2. As an unprivileged account with a 0700 home: the same with the binary built in 1
#      (cargo is root's on this machine), so the private cluster is also tried as its owner.
#
# Needs root (it creates the account `latchkey-newcomer`), curl, git and python3. The ports
# are the defaults, so 127.0.0.1:8080 must be free. Logs land in target/newcomer/.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh

[ "$(id -u)" = 0 ] || die "run me as root (I create an unprivileged account for part 2)"
repo=$PWD
out=$repo/target/newcomer
rm -rf "$out"
mkdir -p "$out"
base=http://127.0.0.1:8080
account=latchkey-newcomer
email=newcomer@example.org

home=
server_pid=
cleanup() {
  [ -n "$server_pid" ] && kill -INT -- "-$server_pid" 2>/dev/null && wait "$server_pid" || true
  [ -n "$home" ] && rm -rf "$home"
  if id "$account" >/dev/null 2>&1; then
    rm -rf "$(getent passwd "$account" | cut -d: -f6)/my latchkey"
  fi
}
trap cleanup EXIT

# start_server LOG DIR COMMAND...: runs COMMAND in DIR in its own process group (as a
# terminal would, so SIGINT reaches cargo and Latchkey alike), with no Latchkey settings.
start_server() {
  local logfile=$1 dir=$2
  shift 2
  (cd "$dir" && exec setsid env -u DATABASE_URL $(env | sed -n 's/^\(LATCHKEY_[A-Z_]*\)=.*/-u \1/p') \
    "$@") > "$logfile" 2>&1 &
  server_pid=$!
}

# stop_server: Ctrl-C, then the exit status must be 0.
stop_server() {
  local status=0
  kill -INT -- "-$server_pid"
  wait "$server_pid" || status=$?
  server_pid=
  [ "$status" = 0 ] || die "Latchkey exited $status after SIGINT"
}

# sign_in LOG: the whole sign-in by the console link, as one browser (one cookie jar).
sign_in() {
  local logfile=$1 jar=$out/jar csrf status link token page
  rm -f "$jar"
  csrf=$(csrf_of "$base/login" "$jar")
  [ -n "$csrf" ] || die "no CSRF token on /login"
  status=$(curl -s -o /dev/null -w '%{http_code}' -c "$jar" -b "$jar" \
    --data-urlencode "email=$email" --data-urlencode "csrf_token=$csrf" "$base/login")
  [ "$status" = 200 ] || die "POST /login answered $status"
  for _ in $(seq 100); do
    link=$(grep -o "$base/auth/verify?token=[A-Za-z0-9_.%-]*" "$logfile" | tail -1 || true)
    [ -n "$link" ] && break
    sleep 0.1
  done
  [ -n "$link" ] || die "the console backend printed no sign-in link (see $logfile)"
  page=$(curl -s -c "$jar" -b "$jar" "$link")
  csrf=$(sed -n 's/.*<meta name="csrf-token" content="\([^"]*\)".*/\1/p' <<<"$page" | head -1)
  token=${link#*token=}
  status=$(curl -s -o /dev/null -w '%{http_code}' -c "$jar" -b "$jar" \
    --data "token=$token" --data-urlencode "csrf_token=$csrf" "$base/auth/verify")
  [ "$status" = 303 ] || die "POST /auth/verify answered $status"
  status=$(curl -s -o "$out/dashboard.html" -w '%{http_code}' -b "$jar" "$base/")
  [ "$status" = 200 ] || die "the dashboard answered $status after signing in"
  grep -q "$email" "$out/dashboard.html" || die "the dashboard does not name $email"
}

# --- 1. root, a 0700 folder, the README's command ------------------------------------------
home=$(mktemp -d)
chmod 700 "$home"
# A space in the path, as in many people's folders ("My Projects"): every path is quoted.
checkout="$home/my latchkey"
git clone -q "$repo" "$checkout"
# The README's "Run it" command, which makes the address an admin.
log "1) as root in $checkout (mode $(stat -c %a "$home")): LATCHKEY_ADMINS=$email cargo run --release"
start_server "$out/root.log" "$checkout" env LATCHKEY_ADMINS="$email" cargo run --release
# A cold release build takes a few minutes on two cores.
wait_http "$base/readyz" 200 1200 || die "/readyz never answered 200; see $out/root.log"
sign_in "$out/root.log"
cluster_dir=/var/lib/latchkey/clusters/$(cat "$checkout/.latchkey/cluster-id")
[ -f "$cluster_dir/data/postmaster.pid" ] || die "no running cluster in $cluster_dir"
stop_server
[ ! -f "$cluster_dir/data/postmaster.pid" ] || die "the private cluster still runs after Ctrl-C"
[ "$(stat -c %a "$home")" = 700 ] || die "the 0700 folder was loosened"
log "1) signed in, stopped cleanly; the cluster lived in $cluster_dir"
binary=$checkout/target/release/latchkey
rm -rf "$cluster_dir"

# --- 2. an unprivileged account, its 0700 home, the built binary ---------------------------
id "$account" >/dev/null 2>&1 || useradd -m -s /bin/bash "$account"
user_home=$(getent passwd "$account" | cut -d: -f6)
chmod 700 "$user_home"
user_checkout="$user_home/my latchkey"
git clone -q "$repo" "$user_checkout"
mkdir -p "$user_checkout/target/release"
cp "$binary" "$user_checkout/target/release/latchkey"
chown -R "$account:" "$user_checkout"
rm -rf "$home"
home=
log "2) as $account in $user_checkout: target/release/latchkey"
start_server "$out/user.log" "$user_checkout" runuser -u "$account" -- target/release/latchkey
wait_http "$base/readyz" 200 60 || die "/readyz never answered 200; see $out/user.log"
(cd "$user_checkout" && runuser -u "$account" -- target/release/latchkey members add "$email" --role admin) \
  >> "$out/user.log" 2>&1
sign_in "$out/user.log"
stop_server
[ ! -f "$user_checkout/.latchkey/cluster/data/postmaster.pid" ] \
  || die "the private cluster still runs after Ctrl-C"
log "2) signed in, stopped cleanly; the cluster lived in $user_checkout/.latchkey/cluster"
log "newcomer check passed"
