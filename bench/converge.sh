#!/usr/bin/env bash
# Converge benchmark, side by side in one run on the same 20 services:
#   railyard apply            vs  docker compose up -d (Compose v2)  vs  the engine floor (20 containers created
#   and started straight through the Engine API, in parallel, nothing else).
# Cold converge (nothing running) and no-op apply (all 20 running), median of RUNS runs, with ratios.
# The headline is the DEFAULT config: apps without a `health` field, ready once running, as Compose has it.
# An extra row gives every app a TCP health check, against `docker compose up -d --wait` (which waits for health too).
# The floor makes the same containers (published port, user network and alias, restart policy).
# Usage: bench/converge.sh [RUNS]   (default 5)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
apps=20

scripts/install-deps >/dev/null
cargo build --release --quiet --bin railyard --example engine_floor
railyard=target/release/railyard
floor=target/release/examples/engine_floor

work=$(mktemp -d)
cleanup() {
  docker compose -p rybench-compose -f "$work/compose.yaml" down -v --timeout 1 >/dev/null 2>&1 || true
  docker ps -aq --filter "name=rybench-$$-" | xargs -r docker rm -f >/dev/null
  docker ps -aq --filter label=dev.railyard.bench | xargs -r docker rm -f >/dev/null
  docker network ls -q --filter "name=rybench-$$-" | xargs -r docker network rm >/dev/null 2>&1 || true
  docker network ls -q --filter label=dev.railyard.bench | xargs -r docker network rm >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# The image: Debian's static busybox, FROM scratch (no registry here).
image=railyard-bench/busybox:1
if ! docker image inspect "$image" >/dev/null 2>&1; then
  mkdir -p "$work/image"
  install -m 0755 /bin/busybox "$work/image/busybox"
  printf 'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n' >"$work/image/Dockerfile"
  docker build -q --force-rm -t "$image" "$work/image" >/dev/null
fi

# The same 20 services for every peer: railyard's repository, and its own export for Compose. `repo` is the
# default config (no health field); `repo-health` adds a TCP check to every app.
write_repo() { # dir health-line
  mkdir -p "$1/apps"
  printf 'kind: Project\nname: rybench\n' >"$1/railyard.yaml"
  for i in $(seq 1 $apps); do
    cat >"$1/apps/app-$i.yaml" <<APP
kind: App
name: app-$i
image: $image
pull: never
command: ["httpd", "-f", "-p", "8080", "-h", "/"]
ports: [{ name: http, port: 8080 }]
stopGracePeriod: 1s
$2
APP
  done
}
write_repo "$work/repo" ""
write_repo "$work/repo-health" "health: { tcp: { port: http }, interval: 500ms }"
$railyard export compose "$work/repo" >"$work/compose.yaml"
$railyard export compose "$work/repo-health" >"$work/compose-health.yaml"

# Bash's own clock (no `date` process per sample, which would add a millisecond or two to every figure).
now_us() { echo "${EPOCHREALTIME/./}"; }
timed() { local start; start=$(now_us); "$@" >/dev/null 2>&1; echo $((($(now_us) - start + 500) / 1000)); }
# No-op samples per run and tool: a single sample right after a cold start mostly measures the engine settling.
noops=5
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : int((v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
down_railyard() { docker ps -aq --filter "label=com.docker.compose.project=$project" | xargs -r docker rm -f >/dev/null
                  docker network ls -q --filter "label=com.docker.compose.project=$project" | xargs -r docker network rm >/dev/null 2>&1 || true; }

: >"$work/railyard-cold"; : >"$work/railyard-noop"; : >"$work/compose-cold"; : >"$work/compose-noop"; : >"$work/floor"
: >"$work/railyard-health"; : >"$work/compose-health"
for run in $(seq 1 "$runs"); do
  # A railyard project (and so a network) per run, as for the floor below: a network the engine cannot remove
  # (stale endpoint) is left behind instead of being reused by the next cold run.
  project="rybench-$$-$run"
  for repo in repo repo-health; do printf 'kind: Project\nname: %s\n' "$project" >"$work/$repo/railyard.yaml"; done
  timed docker compose -p rybench-compose -f "$work/compose.yaml" up -d >>"$work/compose-cold"
  for _ in $(seq "$noops"); do timed docker compose -p rybench-compose -f "$work/compose.yaml" up -d >>"$work/compose-noop"; done
  docker compose -p rybench-compose -f "$work/compose.yaml" down -v --timeout 1 >/dev/null 2>&1

  timed $railyard apply "$work/repo" >>"$work/railyard-cold"
  for _ in $(seq "$noops"); do timed $railyard apply "$work/repo" >>"$work/railyard-noop"; done
  [ "$(docker ps -q --filter label=com.docker.compose.project=$project | wc -l)" -eq $apps ] || { echo "railyard did not start $apps apps" >&2; exit 1; }
  down_railyard

  timed docker compose -p rybench-compose -f "$work/compose-health.yaml" up -d --wait >>"$work/compose-health"
  docker compose -p rybench-compose -f "$work/compose-health.yaml" down -v --timeout 1 >/dev/null 2>&1

  timed $railyard apply "$work/repo-health" >>"$work/railyard-health"
  [ "$(docker ps -q --filter label=com.docker.compose.project=$project --filter health=healthy | wc -l)" -eq $apps ] || { echo "railyard did not make $apps apps healthy" >&2; exit 1; }
  down_railyard

  # A network per run: the engine (20.10) sometimes keeps a stale endpoint on a network whose containers were just
  # removed, and refuses to remove it; the next run must not trip over it.
  $floor "$image" $apps "rybench-floor-$$-$run" >>"$work/floor"
  docker ps -aq --filter label="dev.railyard.bench=rybench-floor-$$-$run" | xargs -r docker rm -f >/dev/null
  docker network ls -q --filter label="dev.railyard.bench=rybench-floor-$$-$run" | xargs -r docker network rm >/dev/null 2>&1 || true
  echo "run $run/$runs done" >&2
done

rc=$(median <"$work/railyard-cold"); rn=$(median <"$work/railyard-noop")
cc=$(median <"$work/compose-cold"); cn=$(median <"$work/compose-noop"); fl=$(median <"$work/floor")
rh=$(median <"$work/railyard-health"); ch=$(median <"$work/compose-health")
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
echo
echo "$apps services, median of $runs runs (ms)"
printf '%-38s %8s\n' "engine floor (API, parallel)" "$fl"
printf '%-38s %8s\n' "docker compose up -d, cold" "$cc"
printf '%-38s %8s\n' "railyard apply, cold" "$rc"
printf '%-38s %8s\n' "docker compose up -d, no-op" "$cn"
printf '%-38s %8s\n' "railyard apply, no-op" "$rn"
printf '%-38s %8s\n' "docker compose up -d --wait, health" "$ch"
printf '%-38s %8s\n' "railyard apply, cold, health" "$rh"
echo
echo "cold: railyard / compose v2    = $(ratio "$rc" "$cc")   (target <= 1.00)"
echo "cold: railyard / engine floor  = $(ratio "$rc" "$fl")   (target <= 1.15)"
echo "no-op: compose v2 / railyard   = $(ratio "$cn" "$rn")   (target >= 10)"
echo "health: railyard / compose --wait = $(ratio "$rh" "$ch")"
# Machine-readable rows for bench/all.sh, with every run's figure beside the median.
runs_of() { tr '\n' ' ' <"$work/$1" | sed 's/ $//'; }
for figure in floor compose-cold railyard-cold compose-noop railyard-noop compose-health railyard-health; do
  echo "ROW converge_${figure//-/_}_ms $(median <"$work/$figure") ($(runs_of "$figure"))"
done
