#!/usr/bin/env bash
# Caddy push benchmark: a Caddy from Debian's package on loopback ports, 1,000 domains pushed in one config and one
# route change (examples/caddy_push.rs), then the cost of a route change per route layout (bench/caddy_layouts.py).
# Usage: bench/caddy.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v caddy >/dev/null || { sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo; $sudo apt-get install -y -qq caddy >/dev/null; }
cargo build --release --quiet --example caddy_push
work=$(mktemp -d)
port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
admin=$(port); http=$(port); https=$(port)
echo "{\"admin\": {\"listen\": \"127.0.0.1:$admin\"}}" >"$work/caddy.json"
HOME=$work XDG_DATA_HOME=$work/data XDG_CONFIG_HOME=$work/config caddy run --config "$work/caddy.json" >/dev/null 2>&1 &
caddy_pid=$!
trap 'kill $caddy_pid 2>/dev/null; wait $caddy_pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 50); do (echo >"/dev/tcp/127.0.0.1/$admin") 2>/dev/null && break; sleep 0.1; done
target/release/examples/caddy_push "http://127.0.0.1:$admin" "127.0.0.1:$http" "127.0.0.1:$https"
python3 bench/caddy_layouts.py "$admin" "$http"
