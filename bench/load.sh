#!/usr/bin/env bash
# Load + validate + plan of a large repository as a process, as a user runs it: `railyard plan DIR --backend memory`
# (the in-memory backend: nothing observed, so every app is a create with its diff) and `railyard validate DIR`, on
# APPS apps (default 10,000) of one file each, wall time (median of RUNS, default 5) and peak RSS.
# Usage: bench/load.sh [APPS] [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
apps=${1:-10000}
runs=${2:-5}
cargo build --release --quiet --bin railyard --example engine_floor  # as bench/all.sh builds: no rebuild between benches
railyard=target/release/railyard
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/apps"
printf 'kind: Project\nname: big\n' >"$work/railyard.yaml"
for i in $(seq 1 "$apps"); do
  printf 'kind: App\nname: app-%s\nimage: example/app:1\nports: [{ name: http, port: 8080 }]\nenv: { MODE: production }\n' \
    "$i" >"$work/apps/app-$i.yaml"
done
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : int((v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
measure() { # name args...
  local name=$1 times="" rss=0
  shift
  "$railyard" "$@" >/dev/null # warm the page cache, as a daemon's second read is
  for _ in $(seq "$runs"); do
    local start=${EPOCHREALTIME/./}
    "$railyard" "$@" >/dev/null
    times+="$(((${EPOCHREALTIME/./} - start + 500) / 1000)) "
  done
  # GNU time's peak RSS (KB) of the process, in a run of its own (its clock has 10 ms steps).
  rss=$({ /usr/bin/time -f "%M" "$railyard" "$@" >/dev/null; } 2>&1 | tail -n1)
  local ms
  ms=$(tr ' ' '\n' <<<"$times" | grep . | median)
  echo "$name of $apps apps: ${ms} ms (median of $runs: ${times% }), peak RSS $((rss / 1024)) MB"
  echo "ROW ${name}_ms $ms (${times% })"
  echo "ROW ${name}_rss_mb $((rss / 1024))"
}
measure load_plan plan "$work" --backend memory
measure load_validate validate "$work"
