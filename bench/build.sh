#!/usr/bin/env bash
# Build benchmark, side by side in one run: a code change of an app built from a small multi-stage Dockerfile (local
# files only, FROM scratch with busybox: no registry), from the edit to the new page served:
#   railyard apply DIR   (the content tag built, the container replaced; the default config: no health field)
#   vs by hand: docker build -t IMAGE CONTEXT && docker compose up -d   (Compose v2, the same image and port)
# each timed until the published port answers the new page; median of RUNS rounds, the tools alternating.
# Then a change that touches no build input (an environment variable): railyard's plan has no build step, and the
# apply's build time is 0 ms.
# Usage: bench/build.sh [RUNS]   (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}

scripts/install-deps >/dev/null
cargo build --release --quiet --bin railyard
railyard=target/release/railyard
project=rybench-build-$$
hand=rybench-hand-$$
work=$(mktemp -d)
cleanup() {
  "$railyard" destroy "$work/repo" --env production --yes >/dev/null 2>&1 || true
  IMAGE=none docker compose -p "$hand" -f "$work/compose.yaml" down --timeout 1 >/dev/null 2>&1 || true
  docker image ls -q --filter "reference=railyard.local/$project/*" | xargs -r docker image rm --force >/dev/null 2>&1 || true
  docker image ls -q --filter "reference=$hand/*" | xargs -r docker image rm --force >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

write_context() { # dir
  mkdir -p "$1"
  install -m 0755 /bin/busybox "$1/busybox"
  cat >"$1/Dockerfile" <<'DOCKERFILE'
FROM scratch AS base
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
FROM base AS assets
COPY page.txt /src/page.txt
RUN ["sh", "-c", "mkdir -p /www && cp /src/page.txt /www/index.html"]
FROM base AS runtime
COPY --from=assets /www /www
CMD ["httpd", "-f", "-p", "8080", "-h", "/www"]
DOCKERFILE
}

mkdir -p "$work/repo/apps"
printf 'kind: Project\nname: %s\n' "$project" >"$work/repo/railyard.yaml"
write_app() { # extra-line
  cat >"$work/repo/apps/web.yaml" <<APP
kind: App
name: web
build: { context: services/web, target: runtime }
ports: [{ name: http, port: 8080 }]
stopGracePeriod: 1s
$1
APP
}
write_app ""
write_context "$work/repo/services/web"
write_context "$work/hand"
cat >"$work/compose.yaml" <<COMPOSE
services:
  web:
    image: \${IMAGE}
    ports: ["127.0.0.1::8080"]
    stop_grace_period: 1s
COMPOSE

ms() { date +%s%3N; }
page_of() { # port
  curl -s --max-time 1 "http://127.0.0.1:$1/" 2>/dev/null || true
}
railyard_port() {
  local id
  id=$(docker ps -q --filter "label=com.docker.compose.project=$project" --filter label=dev.railyard.app=web | head -n1)
  [ -n "$id" ] && docker port "$id" 8080/tcp 2>/dev/null | head -n1 | sed 's/.*://'
}
hand_port() {
  docker compose -p "$hand" -f "$work/compose.yaml" port web 8080 2>/dev/null | sed 's/.*://'
}
wait_page() { # port-function text
  for _ in $(seq 1 3000); do
    local port
    port=$($1 || true)
    [ -n "$port" ] && [ "$(page_of "$port")" = "$2" ] && return 0
    sleep 0.01
  done
  echo "timed out waiting for $2" >&2
  return 1
}

run_railyard() { # text
  echo "$1" >"$work/repo/services/web/page.txt"
  local start end
  start=$(ms)
  "$railyard" apply "$work/repo" --env production >"$work/railyard.out" 2>&1 || { cat "$work/railyard.out" >&2; exit 1; }
  wait_page railyard_port "$1"
  end=$(ms)
  echo $((end - start))
}
run_hand() { # text
  echo "$1" >"$work/hand/page.txt"
  local start end
  start=$(ms)
  DOCKER_BUILDKIT=0 docker build -q -t "$hand/web:$1" "$work/hand" >/dev/null 2>&1
  IMAGE="$hand/web:$1" docker compose -p "$hand" -f "$work/compose.yaml" up -d --quiet-pull >/dev/null 2>&1
  wait_page hand_port "$1"
  end=$(ms)
  echo $((end - start))
}

median() { sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : int((a[NR / 2] + a[NR / 2 + 1]) / 2) }'; }

# Warm both: the base stages built once each, the first container running.
run_railyard railyard-warm >/dev/null
run_hand hand-warm >/dev/null

railyard_times=()
hand_times=()
for round in $(seq 1 "$runs"); do
  # Each tool's page differs from the other's: the engine's local layer cache would otherwise let the second
  # build of a round reuse the first one's layers.
  if [ $((round % 2)) -eq 1 ]; then
    railyard_times+=("$(run_railyard "railyard-$round")")
    hand_times+=("$(run_hand "hand-$round")")
  else
    hand_times+=("$(run_hand "hand-$round")")
    railyard_times+=("$(run_railyard "railyard-$round")")
  fi
done
railyard_median=$(printf '%s\n' "${railyard_times[@]}" | median)
hand_median=$(printf '%s\n' "${hand_times[@]}" | median)

# A change that touches no build input: no build step in the plan, none in the apply.
write_app "env: { ROUND: \"$runs\" }"
start=$(ms)
"$railyard" apply "$work/repo" --env production >"$work/nobuild.out" 2>&1
nobuild=$(( $(ms) - start ))
builds=$(grep -c '^build web' "$work/nobuild.out" || true)

echo "code change -> new page served (median of $runs, ms):"
echo "  railyard apply (build + replace):            $railyard_median   (${railyard_times[*]})"
echo "  docker build + docker compose up -d by hand:  $hand_median   (${hand_times[*]})"
awk -v r="$railyard_median" -v h="$hand_median" 'BEGIN { printf "  ratio railyard / by hand: %.2fx (target <= 1.10x)\n", r / h }'
echo "a change that touches no build input: $builds build step(s), apply ${nobuild} ms (0 ms of build)"
