#!/usr/bin/env bash
# Runs a pushlab cluster on this machine: one Redis, two pushlab nodes on it,
# and nginx in front of them, round-robin, with no sticky sessions (no
# ip_hash, no cookie). Open http://127.0.0.1:${PROXY_PORT:-8080}/ and every
# request or connection goes to either node. Ctrl-C stops everything.
#
# Needs redis-server and nginx (apt-get install redis-server nginx) and a
# built pushlab (cargo build --release). Ports: REDIS_PORT (6390),
# NODE_PORTS ("8081 8082"), PROXY_PORT (8080). nginx's configuration comes
# from scripts/nginx-cluster-conf.sh; it logs which node served each request
# to its access.log in the temporary folder.
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

nodes=()
for port in "${node_ports[@]}"; do
  "$bin" --addr "127.0.0.1:$port" --redis "redis://127.0.0.1:$redis_port/0" \
    --trusted-proxy 127.0.0.1 &
  pids+=($!)
  nodes+=("127.0.0.1:$port")
done

scripts/nginx-cluster-conf.sh "$work" "$proxy_port" "${nodes[@]}" >"$work/nginx.conf"
nginx -p "$work" -e "$work/error.log" -c "$work/nginx.conf" &
pids+=($!)

echo "pushlab cluster: http://127.0.0.1:$proxy_port/ (nodes ${node_ports[*]}, Redis $redis_port)"
wait -n
