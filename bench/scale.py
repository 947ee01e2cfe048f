#!/usr/bin/env python3
"""One daemon following many environments (issue 29), `railyard serve` as a user starts it (release build, default
intervals: polls, drift checks, autoscaler sampling), on the in-memory backend so that the figures are the daemon's
own cost and not the engine's.

ENVS environments (default 50) listed in the Project, all following `main`, each with APPS apps (default 20) of one
replica and a CPU-target ScalingRule each (ENVS x APPS replicas sampled by the autoscaler):

1. first convergence: serve started to every environment synced;
2. idle: RSS (VmRSS) after the first convergence settled, and CPU (utime + stime of /proc/PID/stat) over IDLE seconds
   (default 30) as a percentage of one core;
3. a push changing every app of every environment, announced by one signed webhook: time until every environment is
   synced at the new commit, and how many git fetches it took (railyard_git_fetch_duration_seconds_count).

With `--backend docker` (the end-to-end figure: 10 x 20 in bench/all.sh) the apps are busybox httpd containers of
railyard-bench/busybox:1 (made by bench/converge.sh), removed at the end.
Prints `ROW name value` lines for bench/all.sh (prefixed `scale_docker_` on Docker).
Usage: bench/scale.py RAILYARD [--envs 50] [--apps 20] [--idle 30] [--backend memory|docker]
"""
import argparse, hashlib, hmac, json, os, re, shutil, subprocess, sys, tempfile, time, urllib.request

SECRET = b"bench-scale-secret"


def git(repo, *args):
    subprocess.run(["git", "-C", repo, "-c", "user.name=bench", "-c", "user.email=bench@railyard.dev", *args],
                   check=True, capture_output=True)


IMAGES = {"memory": 'image: example/app:1\ncommand: ["serve"]\n',
          "docker": 'image: railyard-bench/busybox:1\npull: never\ncommand: ["httpd", "-f", "-p", "8080", "-h", "/"]\n'
                    'stopGracePeriod: 1s\n'}


def write_repo(repo, envs, apps, version, backend):
    os.makedirs(os.path.join(repo, "apps"), exist_ok=True)
    listing = "".join(f"  - {{ name: e{i}, branch: main }}\n" for i in range(1, envs + 1))
    with open(os.path.join(repo, "railyard.yaml"), "w") as f:
        f.write(f"kind: Project\nname: rys\nenvironments:\n{listing}")
    for i in range(1, apps + 1):
        with open(os.path.join(repo, "apps", f"app-{i}.yaml"), "w") as f:
            f.write(f"kind: App\nname: app-{i}\n{IMAGES[backend]}"
                    f"env: {{ VERSION: \"{version}\" }}\nresources: {{ cpus: 0.5 }}\n"
                    f"ports: [{{ name: http, port: 8080 }}]\n---\n"
                    f"kind: ScalingRule\napp: app-{i}\nmin: 1\nmax: 3\ntargetCpuPercent: 70\n")


def get(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return r.read().decode()


def synced_at(port, commit, envs):
    listing = json.loads(get(port, "/api/v1/environments"))
    done = [e for e in listing if e["syncStatus"] == "synced" and (commit is None or (e["commit"] or {}).get("sha") == commit)]
    return len(listing) == envs and len(done) == envs


def fetches(port):
    match = re.search(r"^railyard_git_fetch_duration_seconds_count\S* (\d+)", get(port, "/metrics"), re.M)
    return int(match.group(1)) if match else 0


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1)) / 1024


def wait(what, check, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    sys.exit(f"timed out waiting for {what}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("railyard")
    parser.add_argument("--envs", type=int, default=50)
    parser.add_argument("--apps", type=int, default=20)
    parser.add_argument("--idle", type=int, default=30)
    parser.add_argument("--backend", choices=["memory", "docker"], default="memory")
    args = parser.parse_args()
    prefix = "scale_" if args.backend == "memory" else "scale_docker_"
    work = tempfile.mkdtemp(prefix="railyard-scale-")
    repo, state = os.path.join(work, "repo"), os.path.join(work, "state")
    os.makedirs(repo)
    write_repo(repo, args.envs, args.apps, "v1", args.backend)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "v1")
    env = dict(os.environ, RAILYARD_WEBHOOK_SECRET=SECRET.decode(), RUST_LOG="warn")
    started = time.monotonic()
    serve = subprocess.Popen([args.railyard, "serve", "--backend", args.backend, "--repo", repo, "--listen",
                              "127.0.0.1:0", "--state-dir", state], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, env=env, text=True)
    try:
        port = int(re.search(r"127\.0\.0\.1:(\d+)", serve.stdout.readline()).group(1))
        wait("the first convergence", lambda: synced_at(port, None, args.envs))
        first = (time.monotonic() - started) * 1000
        time.sleep(10)  # the first drift checks and autoscaler rounds after the start
        rss = rss_mb(serve.pid)
        ticks, t0 = cpu_ticks(serve.pid), time.monotonic()
        time.sleep(args.idle)
        cpu = (cpu_ticks(serve.pid) - ticks) / os.sysconf("SC_CLK_TCK") / (time.monotonic() - t0) * 100

        write_repo(repo, args.envs, args.apps, "v2", args.backend)
        git(repo, "commit", "-q", "-am", "v2")
        commit = subprocess.run(["git", "-C", repo, "rev-parse", "HEAD"], check=True, capture_output=True,
                                text=True).stdout.strip()
        before = fetches(port)
        body = b'{"ref": "refs/heads/main"}'
        signature = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
        pushed = time.monotonic()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/hooks/generic", data=body, method="POST",
                                         headers={"X-Railyard-Signature": signature})
        urllib.request.urlopen(request, timeout=10).close()
        wait("every environment at the pushed commit", lambda: synced_at(port, commit, args.envs))
        converged = (time.monotonic() - pushed) * 1000
        push_fetches = fetches(port) - before
    finally:
        serve.terminate()
        serve.wait()
        shutil.rmtree(work, ignore_errors=True)
        if args.backend == "docker":
            label = "label=com.docker.compose.project"
            for i in range(1, args.envs + 1):
                subprocess.run(f"docker ps -aq --filter {label}=rys-e{i} | xargs -r docker rm -f; "
                               f"docker network ls -q --filter {label}=rys-e{i} | xargs -r docker network rm",
                               shell=True, capture_output=True)
    replicas = args.envs * args.apps
    print(f"{args.envs} environments x {args.apps} apps ({replicas} replicas, {args.backend} backend), default intervals:")
    print(f"  first convergence: {first:.0f} ms")
    print(f"  idle RSS: {rss:.1f} MB (target < 60 MB); idle CPU over {args.idle} s: {cpu:.2f} % of one core "
          "(target < 1 %)")
    print(f"  a push changing every environment: all {args.envs} synced in {converged:.0f} ms, "
          f"{push_fetches} git fetch(es) (target 1)")
    for name, value in [("first_ms", f"{first:.0f}"), ("idle_rss_mb", f"{rss:.1f}"), ("idle_cpu_pct", f"{cpu:.2f}"),
                        ("push_ms", f"{converged:.0f}"), ("push_fetches", push_fetches)]:
        print(f"ROW {prefix}{name} {value}")


if __name__ == "__main__":
    main()
