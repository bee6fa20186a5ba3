#!/usr/bin/env bash
# Runs a pushlab cluster on this machine: one Redis, two pushlab nodes on it,
# and nginx in front of them, round-robin, with no sticky sessions (no
# ip_hash, no cookie). Open http://127.0.0.1:${PROXY_PORT:-8080}/ and every
# request or connection goes to either node. Ctrl-C stops everything.
#
# Needs redis-server and nginx (apt-get install redis-server nginx) and a
# built pushlab (cargo build --release). Ports: REDIS_PORT (6390),
# NODE_PORTS ("8081 8082"), PROXY_PORT (8080).
set -euo pipefail
cd "$(dirname "$0")/.."

redis_port=${REDIS_PORT:-6390}
node_ports=(${NODE_PORTS:-8081 8082})
proxy_port=${PROXY_PORT:-8080}
bin=${PUSHLAB_BIN:-target/release/pushlab}
work=$(mktemp -d)
pids=()

stop() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap stop EXIT INT TERM

[ -x "$bin" ] || { echo "build pushlab first: cargo build --release" >&2; exit 1; }

# Redis keeps nothing on disk here: stopping it loses the logs, and the
# nodes report that to clients as a new epoch (a gap).
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
  --dir "$work" --daemonize no --loglevel warning &
pids+=($!)
until redis-cli -p "$redis_port" ping >/dev/null 2>&1; do sleep 0.1; done

upstreams=""
for port in "${node_ports[@]}"; do
  "$bin" --addr "127.0.0.1:$port" --redis "redis://127.0.0.1:$redis_port/0" \
    --trusted-proxy 127.0.0.1 &
  pids+=($!)
  upstreams+="    server 127.0.0.1:$port;"$'\n'
done

cat >"$work/nginx.conf" <<CONF
daemon off;
worker_processes 1;
pid $work/nginx.pid;
error_log $work/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/body;
  proxy_temp_path $work/proxy;
  fastcgi_temp_path $work/fastcgi;
  uwsgi_temp_path $work/uwsgi;
  scgi_temp_path $work/scgi;
  # Round-robin, the default: no ip_hash, no sticky cookie.
  upstream pushlab {
$upstreams  }
  map \$http_upgrade \$connection_upgrade { default upgrade; '' close; }
  server {
    listen 127.0.0.1:$proxy_port;
    location / {
      proxy_pass http://pushlab;
      proxy_http_version 1.1;
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      # WebSocket upgrades.
      proxy_set_header Upgrade \$http_upgrade;
      proxy_set_header Connection \$connection_upgrade;
      # SSE and long polls: pass bytes on at once, hold them open.
      proxy_buffering off;
      proxy_read_timeout 1h;
    }
  }
}
CONF
nginx -c "$work/nginx.conf" &
pids+=($!)

echo "pushlab cluster: http://127.0.0.1:$proxy_port/ (nodes ${node_ports[*]}, Redis $redis_port)"
wait -n
