#!/usr/bin/env bash
# No-op apply of 20 running apps: railyard at commit BASE (default c6909fc, the commit before issue 26's Jobs) against
# this checkout, alternating, 11 runs each. Usage: bench/noop_ab.sh [BASE]   (run bench/job.sh first: it builds and
# makes the image)
set -euo pipefail
cd "$(dirname "$0")/.."
base=${1:-c6909fc}
cargo build --release --quiet --bin railyard
rm -rf target/noop-ab-base && git worktree add -q --force target/noop-ab-base "$base"
(cd target/noop-ab-base && CARGO_TARGET_DIR=../noop-ab-target cargo build --release --quiet --bin railyard)
git worktree remove --force target/noop-ab-base
image=railyard-bench/busybox:1
work=$(mktemp -d)
project=rybench-ab-$$
trap 'docker ps -aq --filter label=com.docker.compose.project=$project | xargs -r docker rm -f >/dev/null; docker network rm ${project}_default >/dev/null 2>&1 || true; rm -rf $work' EXIT
printf 'kind: Project\nname: %s\n' $project > $work/railyard.yaml
mkdir -p $work/apps
for i in $(seq 1 20); do
  printf 'kind: App\nname: app%s\nimage: %s\npull: never\ncommand: ["httpd", "-f", "-p", "8080"]\nports: [{ name: http, port: 8080 }]\n' $i $image > $work/apps/app$i.yaml
done
new=target/release/railyard; old=target/noop-ab-target/release/railyard
$new apply $work >/dev/null 2>&1
ms() { local s=$(date +%s%N); "$@" >/dev/null 2>&1; echo $(( ($(date +%s%N) - s) / 1000000 )); }
: > $work/new; : > $work/old
for i in $(seq 1 11); do ms $old apply $work >> $work/old; ms $new apply $work >> $work/new; done
med() { sort -n | sed -n 6p; }
echo "no-op apply, 20 apps: before issue 26 $(med < $work/old) ms, now $(med < $work/new) ms (median of 11, alternating)"
echo "old: $(tr '\n' ' ' < $work/old)"; echo "new: $(tr '\n' ' ' < $work/new)"
