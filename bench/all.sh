#!/usr/bin/env bash
# Every performance figure of README's table, each beside its peer or floor measured in the same run (issue 29):
#   bench/converge.sh   Docker cold and no-op apply of 20 services vs `docker compose up -d` (v2) and the engine floor
#   bench/daemon.py     commit -> serving vs the engine's create+start; idle RSS with 100 apps (Docker)
#   bench/preview.sh    PR opened -> preview serving through Caddy vs the engine's create+start
#   bench/scale.py      one daemon following 50 environments x 20 apps (in-memory backend): idle RSS and CPU, a push;
#                       then 10 x 20 on the Docker Engine, end to end
#   bench/load.sh       load + validate + plan of 10,000 apps as a process
#   bench/webhooks.sh   signed webhook intake under wrk -t2 -c32, and the HTTP floor (GET /healthz) of the same run
#   benches/kubernetes  100 apps + 100 domains against the fake API server: first apply, no-op
# Release build, default config everywhere. Prints the benches' own output to bench/all.log and a table at the end.
# Usage: bench/all.sh [RUNS]   (runs of converge.sh; default 3)
#        bench/all.sh --table     prints the table again from bench/all.log
set -euo pipefail
cd "$(dirname "$0")/.."
log=bench/all.log
table() {
rows=$(grep "^ROW " "$log")
value() { awk -v name="$1" '$1 == "ROW" && $2 == name { print $3; exit }' <<<"$rows"; }
detail() { awk -v name="$1" '$1 == "ROW" && $2 == name { $1 = ""; $2 = ""; $3 = ""; sub(/^ +/, ""); print; exit }' <<<"$rows"; }
calc() { awk "BEGIN { printf \"$1\", $2 }"; }
meets() { awk "BEGIN { exit !($1) }" && echo "met" || echo "MISSED"; }

floor=$(value converge_floor_ms); cold=$(value converge_railyard_cold_ms); compose_cold=$(value converge_compose_cold_ms)
noop=$(value converge_railyard_noop_ms); compose_noop=$(value converge_compose_noop_ms)
serving=$(value commit_to_serving_ms); serving_floor=$(value commit_to_serving_floor_ms)
preview=$(value preview_ms); preview_floor=$(value preview_floor_ms)
plan=$(value load_plan_ms); plan_rss=$(value load_plan_rss_mb)
ping=$(value webhooks_ping_rps); push=$(value webhooks_push_rps); healthz=$(value webhooks_healthz_rps)
hooks_rss=$(value webhooks_peak_rss_mb)
scale_rss=$(value scale_idle_rss_mb); scale_cpu=$(value scale_idle_cpu_pct); fetches=$(value scale_push_fetches)

printf '\n%-62s | %-44s | %s\n' "figure" "measured (peer or floor, same run)" "target"
line() { printf '%-62s | %-44s | %s\n' "$1" "$2" "$3"; }
line "Docker cold apply, 20 services (runs: $(detail converge_railyard_cold_ms))" \
  "$cold ms; floor $floor, compose v2 $compose_cold" \
  "$(calc %.2f "$cold / $floor")x floor <= 1.15: $(meets "$cold / $floor <= 1.15"); $(calc %.2f "$cold / $compose_cold")x compose"
line "Docker no-op apply (runs: $(detail converge_railyard_noop_ms))" "$noop ms; compose v2 $compose_noop ms" \
  "$(calc %.1f "$compose_noop / $noop")x faster >= 10: $(meets "$compose_noop / $noop >= 10")"
line "commit -> serving, railyard's share" "$((serving - serving_floor)) ms ($serving - engine $serving_floor)" \
  "< 100 ms: $(meets "$serving - $serving_floor < 100")"
line "PR opened -> preview serving" "$preview ms; engine floor $preview_floor ms" \
  "floor + $((preview - preview_floor)) ms <= 300: $(meets "$preview - $preview_floor <= 300")"
line "50 envs x 20 apps, idle RSS / idle CPU" "$scale_rss MB / $scale_cpu % of a core" \
  "< 60 MB, < 1 %: $(meets "$scale_rss < 60 && $scale_cpu < 1")"
line "50 envs x 20 apps, a push changing all" "$(value scale_push_ms) ms to all synced, $fetches fetch" \
  "one fetch: $(meets "$fetches == 1")"
line "10 envs x 20 apps on Docker: first sync; a push changing all" \
  "$(value scale_docker_first_ms) ms; $(value scale_docker_push_ms) ms, $(value scale_docker_push_fetches) fetch" \
  "idle $(value scale_docker_idle_rss_mb) MB, $(value scale_docker_idle_cpu_pct) % of a core"
line "load + validate + plan, 10,000 apps (runs: $(detail load_plan_ms))" "$plan ms, $plan_rss MB (validate alone $(value load_validate_ms) ms)" \
  "< 250 ms, < 100 MB: $(meets "$plan < 250 && $plan_rss < 100")"
line "signed webhooks, wrk -t2 -c32 (ping; distinct pushes)" "$ping; $push req/s, $hooks_rss MB; /healthz $healthz" \
  ">= 20,000, < 50 MB: $(meets "$ping >= 20000 && $hooks_rss < 50")"
line "Kubernetes first apply, 100 apps + 100 domains" "$(value k8s_first_ms) ms ($(detail k8s_first_ms))" "(fake API server)"
line "Kubernetes no-op apply" "$(value k8s_noop_ms) ms ($(detail k8s_noop_ms))" \
  "0 writes: $(meets "$(detail k8s_noop_ms | sed 's/.*requests, \([0-9]*\) writes.*/\1/') == 0")"
line "Docker daemon idle RSS, 100 apps running" "$(value docker_idle_rss_mb) MB" ""
}
[ "${1:-}" = "--table" ] && { table; exit; }
runs=${1:-3}
scripts/install-deps >/dev/null
missing=()
for tool in wrk:wrk /usr/bin/time:time perf:linux-perf; do command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}"); done
if [ ${#missing[@]} -gt 0 ]; then apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null; fi
cargo build --release --quiet --bin railyard --example engine_floor
cargo bench --quiet --bench kubernetes --no-run 2>/dev/null

: >"$log"
step() { echo "== $*" | tee -a "$log" >&2; "$@" 2>&1 | tee -a "$log" | grep '^ROW ' || { echo "$1 failed: see $log" >&2; exit 1; }; }
(
  step bash bench/converge.sh "$runs"
  step python3 bench/daemon.py --no-webhooks --runs 5
  step bash bench/preview.sh 5
  step python3 bench/scale.py target/release/railyard
  step python3 bench/scale.py target/release/railyard --backend docker --envs 10 --idle 10
  step bash bench/load.sh 10000 5
  step bash bench/webhooks.sh 10s 1
  step cargo bench --quiet --bench kubernetes
) >/dev/null
table
