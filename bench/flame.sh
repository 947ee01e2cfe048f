#!/usr/bin/env bash
# Flame graphs of railyard's own CPU in the two Docker figures of bench/converge.sh, 20 services (busybox httpd):
# bench/flame/noop.svg   50 no-op `railyard apply` runs of the running services
# bench/flame/cold.svg   10 cold `railyard apply` runs (each from nothing running)
# perf (Debian's linux-perf) samples the railyard processes only, with DWARF call graphs; inferno (crates.io) draws
# them. Also prints the largest costs by top-level function. Usage: bench/flame.sh
set -euo pipefail
cd "$(dirname "$0")/.."
command -v perf >/dev/null || { apt-get update -qq && apt-get install -y -qq linux-perf >/dev/null; }
command -v inferno-flamegraph >/dev/null || cargo install --quiet --locked inferno
cargo build --release --quiet --bin railyard --example engine_floor
railyard=$PWD/target/release/railyard
image=railyard-bench/busybox:1
project=ryflame-$$
work=$(mktemp -d)
down() { docker ps -aq --filter "label=com.docker.compose.project=$project" | xargs -r docker rm -f >/dev/null
         docker network ls -q --filter "label=com.docker.compose.project=$project" | xargs -r docker network rm >/dev/null 2>&1 || true; }
trap 'down; rm -rf "$work"' EXIT
if ! docker image inspect "$image" >/dev/null 2>&1; then
  mkdir -p "$work/image" && install -m 0755 /bin/busybox "$work/image/busybox"
  printf 'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n' >"$work/image/Dockerfile"
  docker build -q --force-rm -t "$image" "$work/image" >/dev/null
fi
mkdir -p "$work/repo/apps" bench/flame
printf 'kind: Project\nname: %s\n' "$project" >"$work/repo/railyard.yaml"
for i in $(seq 1 20); do
  printf 'kind: App\nname: app-%s\nimage: %s\npull: never\ncommand: ["httpd", "-f", "-p", "8080", "-h", "/"]\nports: [{ name: http, port: 8080 }]\nstopGracePeriod: 1s\n' \
    "$i" "$image" >"$work/repo/apps/app-$i.yaml"
done

record() { # name script
  perf record -q -e cpu-clock -F 4999 --call-graph dwarf,32768 -o "$work/$1.data" -- bash -c "$2" >/dev/null 2>&1
  perf script -i "$work/$1.data" --comm railyard 2>/dev/null >"$work/$1.perf" || true
  perf script -i "$work/$1.data" 2>/dev/null | inferno-collapse-perf >"$work/$1.folded"
  grep -E '^(railyard|tokio-rt-worker|tokio-runtime-w)' "$work/$1.folded" >"$work/$1.own" || true
  inferno-flamegraph --title "railyard apply, $1 (20 services), railyard's own CPU" <"$work/$1.own" >"bench/flame/$1.svg"
  echo "bench/flame/$1.svg: $(wc -l <"$work/$1.own") distinct stacks"
}
$railyard apply "$work/repo" >/dev/null
record noop "for i in \$(seq 50); do $railyard apply $work/repo >/dev/null; done"
down
record cold "for i in \$(seq 10); do $railyard apply $work/repo >/dev/null; docker ps -aq --filter label=com.docker.compose.project=$project | xargs -r docker rm -f >/dev/null; done"
for name in noop cold; do
  echo "largest costs, $name (share of railyard's samples, by the frame that names the work):"
  python3 - "$work/$name.own" <<'PY'
import collections, sys
# Each stack goes to the first of these phases (in this order) that one of its frames names; the rest is "other".
phases = [("process start (loader, relocation, page faults)", ["_dl_start", "_dl_relocate", "dl_main", "_start_user"]),
          ("exit and freeing", ["exit", "drop_in_place<railyard::pipeline"]),
          ("reading the repository", ["source::local", "read_dir"]),
          ("YAML parsing", ["serde_saphyr", "granit_parser"]),
          ("validation and desired state", ["model::validate", "desired_state", "model::assemble"]),
          ("Engine API: HTTP and JSON", ["bollard", "hyper", "serde_json"]),
          ("planning", ["plan::plan", "plan::diff"]),
          ("applying (containers, networks)", ["backend::docker::converge", "backend::schedule"]),
          ("tokio runtime and threads", ["tokio::runtime", "clone3", "start_thread"]),
          ("kernel: page faults", ["exc_page_fault"]), ("kernel: system calls", ["entry_SYSCALL"])]
totals, all_ = collections.Counter(), 0
for line in open(sys.argv[1]):
    stack, count = line.rsplit(" ", 1)
    count = int(count); all_ += count
    name = next((label for label, keys in phases if any(k in stack for k in keys)), "other")
    totals[name] += count
for name, count in totals.most_common(6):
    print(f"  {100 * count / max(all_, 1):5.1f} %  {name}")
PY
done
