#!/usr/bin/env bash
# 20 open follow streams (`GET .../logs?follow=true`, as 20 open log pages or `railyard logs -f`) on one app whose
# 2 replicas print 20 lines a second each, with secrets to redact: railyard's CPU over 30 s (utime + stime from
# /proc/<pid>/stat) as a percentage of one core, against the same 30 s with no stream open.
# RAILYARD_BIN=path uses that binary instead of a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps >/dev/null
if [ -z "${RAILYARD_BIN:-}" ]; then
  cargo build --release --quiet --bin railyard
  RAILYARD_BIN="${CARGO_TARGET_DIR:-target}/release/railyard"
fi
if ! docker image inspect railyard-bench/busybox:1 >/dev/null 2>&1; then
  ctx=$(mktemp -d); install -m 0755 /bin/busybox "$ctx/busybox"
  printf 'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n' > "$ctx/Dockerfile"
  docker build -q --force-rm -t railyard-bench/busybox:1 "$ctx" >/dev/null; rm -rf "$ctx"
fi
work=$(mktemp -d)
project=rybench-logs-$$
streams=()
serve_pid=""
cleanup() {
  for pid in "${streams[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -n "$serve_pid" ] && kill "$serve_pid" 2>/dev/null && wait "$serve_pid" 2>/dev/null || true
  docker ps -aq --filter label=com.docker.compose.project=$project | xargs -r docker rm -f >/dev/null
  docker network rm ${project}_default >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/repo" "$work/secrets" "$work/state"
printf 'bench-secret-value-0c1f' > "$work/secrets/token"
printf 'kind: Project\nname: %s\n' $project > "$work/repo/railyard.yaml"
cat > "$work/repo/talker.yaml" <<YAML
kind: App
name: talker
image: railyard-bench/busybox:1
pull: never
replicas: 2
stopGracePeriod: 1s
env: { TOKEN: { secret: token } }
command: ["sh", "-c", "i=0; while true; do i=\$((i+1)); echo \"GET /orders/\$i 200 token=\$TOKEN\"; echo \"warn \$i\" >&2; usleep 100000; done"]
YAML
"$RAILYARD_BIN" serve --repo "$work/repo" --state-dir "$work/state" --listen 127.0.0.1:0 --secrets-dir "$work/secrets" \
  --poll-interval 1h --drift-interval 1h --caddy-admin none > "$work/address" 2> "$work/serve.log" &
serve_pid=$!
for _ in $(seq 100); do grep -q http:// "$work/address" 2>/dev/null && break; sleep 0.2; done
url=$(grep -o 'http://[0-9.:]*' "$work/address" | head -1)
for _ in $(seq 300); do
  curl -fsS "$url/api/v1/environments/production" | grep -q '"syncStatus":"synced"' && break; sleep 0.2
done
sleep 3
ticks() { awk '{ print $14 + $15 }' "/proc/$serve_pid/stat"; }
hz=$(getconf CLK_TCK)
measure() {
  local before after; before=$(ticks); sleep 30; after=$(ticks)
  awk -v t=$((after - before)) -v hz="$hz" 'BEGIN { printf "%.2f", t / hz / 30 * 100 }'
}
idle=$(measure)
for n in $(seq 20); do
  curl -sN "$url/api/v1/environments/production/apps/talker/logs?follow=true&tail=0" > "$work/stream.$n" 2>/dev/null &
  streams+=($!)
done
sleep 2
tailing=$(measure)
lines=$(cat "$work"/stream.* | wc -l)
leaks=$(cat "$work"/stream.* | grep -c bench-secret-value || true)
echo "railyard CPU, % of one core over 30 s: idle $idle, 20 open tails $tailing (${lines} lines streamed, $leaks with the secret)"
