#!/usr/bin/env bash
# Prints an nginx configuration that puts one port in front of several
# upstream nodes: round-robin by default, with no ip_hash and no sticky
# cookie, so every request and every connection may go to any node.
#
#   scripts/nginx-cluster-conf.sh [--ip-hash] DIR PORT HOST:PORT...
#
# DIR is nginx's own folder (pid file, logs, temp files): run it as
# `nginx -p DIR -e DIR/error.log -c DIR/nginx.conf`, as any user. PORT is where it listens on
# 127.0.0.1. `--ip-hash` pins each client address to one node instead: the
# sticky control in the benchmarks.
#
# Every proxied request is logged to DIR/access.log, one line each:
#   METHOD URI STATUS UPSTREAM_ADDR
# so a test can tell which node served what. The e2e tests
# (tests/e2e/harness.mjs), scripts/cluster.sh and
# crates/pushlab-bench/cluster-compare.sh all take their configuration from
# here.
set -euo pipefail

balance="# Round-robin, the default: no ip_hash, no sticky cookie."
if [ "${1:-}" = --ip-hash ]; then
  balance="ip_hash;"
  shift
fi
if [ "$#" -lt 3 ]; then
  echo "usage: $0 [--ip-hash] DIR PORT HOST:PORT..." >&2
  exit 2
fi
dir=$1 port=$2
shift 2

servers=""
for node in "$@"; do
  servers+="    server $node;"$'\n'
done

cat <<CONF
daemon off;
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
  log_format upstream '\$request_method \$request_uri \$status \$upstream_addr';
  access_log $dir/access.log upstream;
  # Temp files in DIR, so nginx needs no root and no /var/lib/nginx.
  client_body_temp_path $dir/body;
  proxy_temp_path $dir/proxy;
  fastcgi_temp_path $dir/fastcgi;
  uwsgi_temp_path $dir/uwsgi;
  scgi_temp_path $dir/scgi;
  client_body_buffer_size 64k;
  upstream nodes {
    $balance
$servers  }
  map \$http_upgrade \$connection_upgrade { default upgrade; '' close; }
  server {
    listen 127.0.0.1:$port;
    location / {
      proxy_pass http://nodes;
      proxy_http_version 1.1;
      # The Host the browser sent, port included: the nodes compare it with
      # a WebSocket upgrade's Origin.
      proxy_set_header Host \$http_host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      # WebSocket upgrades.
      proxy_set_header Upgrade \$http_upgrade;
      proxy_set_header Connection \$connection_upgrade;
      # SSE and long polls: pass bytes on at once, hold them open.
      proxy_buffering off;
      proxy_read_timeout 1h;
      proxy_send_timeout 1h;
    }
  }
}
CONF
