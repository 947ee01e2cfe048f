#!/usr/bin/env bash
# Preview benchmark: a pull request's "opened" webhook to its preview serving through Caddy, against the engine's own
# create+start of the same container, in one run (bench/preview.py). Default settings, the app without a health
# check (the default). Usage: bench/preview.sh [RUNS]   (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
scripts/install-deps >/dev/null
cargo build --release --quiet --bin railyard --example engine_floor
image=railyard-bench/busybox:1
if ! docker image inspect "$image" >/dev/null 2>&1; then
  work=$(mktemp -d)
  install -m 0755 /bin/busybox "$work/busybox"
  printf 'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n' >"$work/Dockerfile"
  docker build -q --force-rm -t "$image" "$work" >/dev/null
  rm -rf "$work"
fi
python3 bench/preview.py target/release/railyard target/release/examples/engine_floor "$image" "$runs"
