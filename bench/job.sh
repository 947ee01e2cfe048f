#!/usr/bin/env bash
# One run-once Job (`true`) through `railyard apply` against `docker run --rm` of the same image, 5 each, alternating.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps >/dev/null
cargo build --release --quiet --bin railyard
if ! docker image inspect railyard-bench/busybox:1 >/dev/null 2>&1; then
  ctx=$(mktemp -d); install -m 0755 /bin/busybox "$ctx/busybox"
  printf 'FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n' > "$ctx/Dockerfile"
  docker build -q --force-rm -t railyard-bench/busybox:1 "$ctx" >/dev/null; rm -rf "$ctx"
fi
image=railyard-bench/busybox:1
work=$(mktemp -d)
project=rybench-job-$$
trap 'docker ps -aq --filter label=com.docker.compose.project=$project | xargs -r docker rm -f >/dev/null; docker volume ls -q --filter label=com.docker.compose.project=$project | xargs -r docker volume rm >/dev/null; docker network rm ${project}_default >/dev/null 2>&1 || true; docker network rm $project-net >/dev/null 2>&1 || true; rm -rf $work' EXIT
printf 'kind: Project\nname: %s\n' $project > $work/railyard.yaml
docker network create $project-net >/dev/null
ms() { local s=$(date +%s%N); "$@" >/dev/null 2>&1; echo $(( ($(date +%s%N) - s) / 1000000 )); }
: > $work/ry; : > $work/dk
for i in 1 2 3 4 5; do
  printf 'kind: Job\nname: once\nimage: %s\npull: never\ncommand: ["sh", "-c", "echo run %s"]\n' $image $i > $work/job.yaml
  ms target/release/railyard apply $work >> $work/ry
  ms docker run --rm --network $project-net $image sh -c "echo run $i" >> $work/dk
done
med() { sort -n | sed -n 3p; }
echo "railyard apply (one Job run): $(med < $work/ry) ms; docker run --rm: $(med < $work/dk) ms"
cat $work/ry | tr '\n' ' '; echo; cat $work/dk | tr '\n' ' '; echo
