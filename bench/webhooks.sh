#!/usr/bin/env bash
# Signed webhook intake, measured from outside (issue 29): `railyard serve` with its default settings (SQLite store
# in its own state directory, one app, `--backend memory` so that nothing runs), then wrk -t2 -c32 -d10s posting
#   1. a signed GitHub `ping` under one fixed delivery id (the first is new, every other one a duplicate: refused,
#      recorded in the deliveries list), and
#   2. signed GitHub `push`es to a branch no environment follows, each a new delivery (its own id and body, so that
#      both of its ids are written to the store and it is recorded), from a pool made beforehand;
#   3. (a floor, not a target) GET /healthz, a route that does nothing: what the HTTP layer alone costs here.
# Each run prints requests/s and its non-2xx count (any is a failure); then the daemon's peak RSS (VmHWM). The last
# lines are `ROW name value` rows for bench/all.sh.
# Usage: bench/webhooks.sh [DURATION (10s)] [RUNS (1)]   (with RUNS > 1 each figure is the median of the runs)
#        RAILYARD_BIN=path/to/railyard bench/webhooks.sh ...   measures that binary instead of building this checkout
#        PERF_DIR=dir bench/webhooks.sh ...   also records a profile of the daemon during each run (perf record -g)
set -euo pipefail
cd "$(dirname "$0")/.."
duration=${1:-10s}
runs=${2:-1}
secret=bench-webhook-secret

railyard=${RAILYARD_BIN:-${CARGO_TARGET_DIR:-target}/release/railyard}
[ -n "${RAILYARD_BIN:-}" ] || nice -n 10 cargo build --release --quiet --bin railyard --example engine_floor
if ! command -v wrk >/dev/null; then
  apt-get install -y wrk >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y wrk >/dev/null; }
fi

work=$(mktemp -d)
pid=
cleanup() {
  if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

repo=$work/repo
mkdir -p "$repo/apps"
printf 'kind: Project\nname: rybench-hooks\n' > "$repo/railyard.yaml"
printf 'kind: App\nname: web\nimage: nginx:1.27\nports: [{ name: http, port: 80 }]\n' > "$repo/apps/web.yaml"
git -C "$repo" init -q -b main
git -C "$repo" -c user.name=bench -c user.email=bench@railyard.dev add -A
git -C "$repo" -c user.name=bench -c user.email=bench@railyard.dev commit -q -m initial

RAILYARD_WEBHOOK_SECRET=$secret env -u RUST_LOG "$railyard" serve --repo "$repo" --backend memory \
  --listen 127.0.0.1:0 --state-dir "$work/state" \
  > "$work/serve.out" 2> "$work/serve.err" &
pid=$!
for _ in $(seq 1 200); do
  port=$(grep -o '127\.0\.0\.1:[0-9]*' "$work/serve.out" 2>/dev/null | head -1 | cut -d: -f2 || true)
  [ -n "$port" ] && break
  kill -0 "$pid" 2>/dev/null || { cat "$work/serve.err" >&2; echo "railyard serve exited" >&2; exit 1; }
  sleep 0.05
done
[ -n "${port:-}" ] || { echo "railyard serve did not say where it listens" >&2; exit 1; }
base=http://127.0.0.1:$port
until curl -fsS "$base/readyz" >/dev/null 2>&1; do sleep 0.1; done

# The ping under a fixed id.
SECRET=$secret WORK=$work python3 - <<'EOF'
import hashlib, hmac, os
secret, work = os.environ["SECRET"].encode(), os.environ["WORK"]
ping = b'{"zen":"Design for failure.","hook_id":1}'
with open(f"{work}/ping.lua", "w") as f:
    f.write('wrk.method = "POST"\nwrk.body = \'%s\'\n' % ping.decode())
    for name, value in [("Content-Type", "application/json"), ("X-GitHub-Event", "ping"),
                        ("X-GitHub-Delivery", "bench-ping-0001"),
                        ("X-Hub-Signature-256", "sha256=" + hmac.new(secret, ping, hashlib.sha256).hexdigest())]:
        f.write(f'wrk.headers["{name}"] = "{value}"\n')
EOF

# A pool of distinct signed pushes for run $1 (raw HTTP requests, all of one length); each of wrk's two threads
# takes its own half. The pool holds 10 s of 40,000 requests/s; past it, pushes repeat (duplicates, still 200).
pushes=400000
make_pushes() {
  SECRET=$secret PORT=$port WORK=$work RUN=$1 PUSHES=$pushes python3 - <<'EOF'
import hashlib, hmac, os
secret, port, work = os.environ["SECRET"].encode(), os.environ["PORT"].encode(), os.environ["WORK"]
run, pushes = int(os.environ["RUN"]), int(os.environ["PUSHES"])
with open(f"{work}/pushes.raw", "wb") as f:
    for n in range(pushes):
        body = b'{"ref":"refs/heads/bench-nobody-follows","after":"%08d%032d"}' % (run, n)
        signature = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
        f.write(b"POST /hooks/github HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nContent-Type: application/json\r\n"
                b"X-GitHub-Event: push\r\nX-GitHub-Delivery: bench-push-%04d-%012d\r\nX-Hub-Signature-256: %s\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (port, run, n, signature.encode(), len(body), body))
EOF
  cat > "$work/push.lua" <<EOF
local size, count, threads = $(( $(stat -c %s "$work/pushes.raw") / pushes )), $pushes, 0
function setup(thread)
  thread:set("part", threads)
  threads = threads + 1
end
function init()
  local file = assert(io.open("$work/pushes.raw", "rb"))
  local half = count / 2
  file:seek("set", part * half * size)
  data = file:read(half * size)
  file:close()
  next_index, last = 0, half
end
function request()
  local at = next_index % last
  next_index = next_index + 1
  return string.sub(data, at * size + 1, (at + 1) * size)
end
EOF
}

rss_mb() { awk '/VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$pid/status"; }
# CPU time the daemon has used so far, in clock ticks: in all ("process"), its children once waited for (git), and
# its live threads summed by name.
cpu_ticks() {
  awk '{ print "process", $14 + $15; print "children", $16 + $17 }' "/proc/$pid/stat"
  for task in /proc/"$pid"/task/*; do
    printf 'thread:%s %s\n' "$(tr ' ' _ < "$task/comm")" "$(awk '{ print $14 + $15 }' "$task/stat")"
  done 2>/dev/null
}
# CPU microseconds per request between two cpu_ticks snapshots ($1, $2) over $3 requests: in all, then by thread
# name (threads that ended between the snapshots, such as Tokio's idle blocking threads, only in the total).
cpu_per_request() {
  awk -v requests="$3" -v hz="$(getconf CLK_TCK)" '
    FNR == NR { before[$1] += $2; next }
    { after[$1] += $2 }
    END {
      us = 1e6 / hz / requests
      total = (after["process"] - before["process"] + after["children"] - before["children"]) * us
      for (name in after) {
        used = (after[name] - before[name]) * us
        if (name != "process" && used > 0) line = line sprintf(", %s %.1f", substr(name, 1 + 7 * (name ~ /^thread:/)), used)
      }
      printf "%.1f us of CPU per request (%s)", total, substr(line, 3)
    }' "$1" "$2"
}
failed=0
# One wrk run: prints "rps non2xx" and, on a line of its own, what the daemon's CPU did per request.
measure() {
  local out profiler=
  if [ -n "${PERF_DIR:-}" ]; then
    mkdir -p "$PERF_DIR"
    perf record -q -F 999 -g -p "$pid" -o "$PERF_DIR/$kind-$run.data" 2>/dev/null &
    profiler=$!
  fi
  cpu_ticks > "$work/cpu.before"
  out=$(wrk -t2 -c32 -d"$duration" "$@")
  cpu_ticks > "$work/cpu.after"
  if [ -n "$profiler" ]; then kill -INT "$profiler"; wait "$profiler" || true; fi
  local rps non2xx errors requests
  rps=$(awk '/^Requests\/sec:/ { printf "%d", $2 }' <<< "$out")
  requests=$(awk '/requests in/ { print $1 }' <<< "$out")
  non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' <<< "$out")
  errors=$(awk '/Socket errors:/ { gsub(",", ""); print $4 + $6 + $8 + $10 }' <<< "$out")
  echo "${rps:-0} $(( ${non2xx:-0} + ${errors:-0} ))"
  cpu_per_request "$work/cpu.before" "$work/cpu.after" "${requests:-1}"
}
# The median of the figures of run kind $1.
median() { tr ' ' '\n' <<< "${samples[$1]}" | grep . | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

declare -A samples
for run in $(seq 1 "$runs"); do
  for kind in ping push healthz; do
    case $kind in
      ping) result=$(measure -s "$work/ping.lua" "$base/hooks/github") ;;
      push) make_pushes "$run"; result=$(measure -s "$work/push.lua" "$base/hooks/github") ;;
      healthz) result=$(measure "$base/healthz") ;;
    esac
    read -r rps bad <<< "$(head -1 <<< "$result")"
    echo "run $run $kind: $rps requests/s, non-2xx or errors: $bad, peak RSS so far $(rss_mb) MB; $(tail -1 <<< "$result")"
    [ "$bad" = 0 ] || failed=1
    samples[$kind]+="$rps "
  done
done

deliveries=$(curl -fsS "$base/api/v1/webhooks" | python3 -c 'import json, sys; print(len(json.load(sys.stdin)["items"]))')
[ "$deliveries" -gt 0 ] || { echo "no delivery was recorded" >&2; failed=1; }
peak=$(rss_mb)
echo "webhook intake, wrk -t2 -c32 -d$duration, median of $runs: ping $(median ping) req/s, push $(median push) req/s," \
  "/healthz $(median healthz) req/s; peak RSS $peak MB"
[ "$failed" = 0 ] || { echo "some requests were not answered 2xx" >&2; exit 1; }
echo "ROW webhooks_ping_rps $(median ping)"
echo "ROW webhooks_push_rps $(median push)"
echo "ROW webhooks_healthz_rps $(median healthz)"
echo "ROW webhooks_peak_rss_mb $peak"
