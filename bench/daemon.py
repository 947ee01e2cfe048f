#!/usr/bin/env python3
"""Daemon benchmarks for `railyard serve` (release build), printed side by side:

1. Commit-to-serving latency: from sending a signed webhook for a new commit to the new replica answering with the
   new value (one app, no health-check wait), median of N, next to the Docker Engine's own create+start of the same
   container (examples/engine_floor). railyard's overhead = the difference.
2. Webhook throughput: wrk sending signed push webhooks for other branches (verified, recorded, not syncing) for 10 s;
   requests/s and the daemon's peak RSS (VmHWM).
3. Idle RSS with 100 apps running.

Usage: bench/daemon.py [--runs 10] [--apps 100]
"""
import argparse, hashlib, hmac, json, os, re, shutil, statistics, subprocess, sys, tempfile, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RAILYARD = os.path.join(ROOT, "target/release/railyard")
FLOOR = os.path.join(ROOT, "target/release/examples/engine_floor")
IMAGE = "railyard-bench/busybox:1"
SECRET = b"bench-secret"


def run(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw).stdout.strip()


def ensure_image():
    if subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True).returncode == 0:
        return
    with tempfile.TemporaryDirectory() as context:
        shutil.copy("/bin/busybox", os.path.join(context, "busybox"))
        os.chmod(os.path.join(context, "busybox"), 0o755)
        with open(os.path.join(context, "Dockerfile"), "w") as f:
            f.write('FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n')
        run("docker", "build", "-q", "--force-rm", "-t", IMAGE, context)


def app(name, message):
    return (f'kind: App\nname: {name}\nimage: {IMAGE}\npull: never\n'
            f'command: ["sh", "-c", "echo $MESSAGE > /index.html && exec httpd -f -p 8080 -h /"]\n'
            f'env: {{ MESSAGE: "{message}" }}\nports: [{{ name: http, port: 8080 }}]\n'
            f'health: {{ startPeriod: 0s }}\nstopGracePeriod: 1s\n')


class Repo:
    def __init__(self, project, apps):
        self.dir = tempfile.mkdtemp(prefix="railyard-bench-")
        self.project = project
        os.makedirs(os.path.join(self.dir, "apps"))
        self.write("railyard.yaml", f"kind: Project\nname: {project}\n")
        for name in apps:
            self.write(f"apps/{name}.yaml", app(name, "v0"))
        git = ["git", "-C", self.dir, "-c", "user.name=bench", "-c", "user.email=bench@railyard.dev"]
        self.git = git
        run("git", "-C", self.dir, "init", "-q", "-b", "main")
        self.commit("initial")

    def write(self, path, text):
        with open(os.path.join(self.dir, path), "w") as f:
            f.write(text)

    def commit(self, message):
        run(*self.git, "add", "-A")
        run(*self.git, "commit", "-q", "-m", message)

    def cleanup(self):
        label = f"label=com.docker.compose.project={self.project}"
        ids = run("docker", "ps", "-aq", "--filter", label).split()
        if ids:
            run("docker", "rm", "-f", *ids)
        nets = run("docker", "network", "ls", "-q", "--filter", label).split()
        if nets:
            run("docker", "network", "rm", *nets)
        shutil.rmtree(self.dir, ignore_errors=True)


class Serve:
    def __init__(self, repo):
        self.state = tempfile.mkdtemp(prefix="railyard-bench-state-")
        # BENCH_RUST_LOG=railyard=debug shows where the time goes (the daemon's log on stderr, with timestamps).
        env = dict(os.environ, RAILYARD_WEBHOOK_SECRET=SECRET.decode(), RUST_LOG=os.environ.get("BENCH_RUST_LOG", "warn"))
        self.process = subprocess.Popen(
            [RAILYARD, "serve", "--repo", repo.dir, "--listen", "127.0.0.1:0", "--state-dir", self.state,
             "--poll-interval", "1h", "--drift-interval", "1h"],
            stdout=subprocess.PIPE, stderr=None if "BENCH_RUST_LOG" in os.environ else subprocess.DEVNULL, env=env,
            text=True)
        line = self.process.stdout.readline()
        self.port = int(re.search(r"127\.0\.0\.1:(\d+)", line).group(1))

    def env(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/api/v1/environments/production") as r:
            return json.load(r)

    def wait_synced(self, timeout=600):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.env()["syncStatus"] == "synced":
                return
            time.sleep(0.2)
        sys.exit("railyard did not sync")

    def hook(self, body):
        signature = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/hooks/generic", data=body, method="POST",
                                         headers={"X-Railyard-Signature": signature})
        with urllib.request.urlopen(request) as r:
            return r.status

    def rss_kb(self, field="VmRSS"):
        with open(f"/proc/{self.process.pid}/status") as f:
            return int(re.search(rf"{field}:\s+(\d+)", f.read()).group(1))

    def stop(self):
        self.process.terminate()
        self.process.wait()
        shutil.rmtree(self.state, ignore_errors=True)


def answering(project, message):
    ids = run("docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={project}").split()
    for container in ids:
        try:
            port = run("docker", "port", container, "8080/tcp").splitlines()[0].rsplit(":", 1)[1]
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as r:
                if r.read().decode().strip() == message:
                    return True
        except Exception:
            pass
    return False


def latency(runs):
    repo = Repo("rybench-latency", ["web"])
    serve = Serve(repo)
    try:
        serve.wait_synced()
        samples = []
        for i in range(1, runs + 1):
            repo.write("apps/web.yaml", app("web", f"v{i}"))
            repo.commit(f"v{i}")
            start = time.perf_counter()
            print(f"webhook sent at {time.time():.3f}", file=sys.stderr)
            serve.hook(b'{"ref": "refs/heads/main"}')
            while not answering(repo.project, f"v{i}"):
                time.sleep(0.005)
            samples.append((time.perf_counter() - start) * 1000)
            print(f"answering at {time.time():.3f}", file=sys.stderr)
            serve.wait_synced()
        floor = []
        for i in range(runs):
            prefix = f"rybench-floor-{i}"
            floor.append(float(run(FLOOR, IMAGE, "1", prefix)))
            ids = run("docker", "ps", "-aq", "--filter", f"label=dev.railyard.bench={prefix}").split()
            run("docker", "rm", "-f", *ids)
            run("docker", "network", "rm", f"{prefix}_default")
        return statistics.median(samples), statistics.median(floor)
    finally:
        serve.stop()
        repo.cleanup()


def throughput():
    repo = Repo("rybench-hooks", [])
    serve = Serve(repo)
    try:
        body = b'{"ref": "refs/heads/elsewhere"}'
        signature = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
        script = os.path.join(serve.state, "post.lua")
        with open(script, "w") as f:
            f.write(f'wrk.method = "POST"\nwrk.body = \'{body.decode()}\'\n'
                    f'wrk.headers["X-Railyard-Signature"] = "{signature}"\n'
                    'wrk.headers["Content-Type"] = "application/json"\n')
        out = run("wrk", "-t2", "-c32", "-d10s", "-s", script, f"http://127.0.0.1:{serve.port}/hooks/generic")
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        if errors:
            sys.exit(f"wrk saw {errors.group(1)} failed requests:\n{out}")
        return rps, serve.rss_kb("VmHWM")
    finally:
        serve.stop()
        repo.cleanup()


def idle_rss(apps):
    repo = Repo("rybench-idle", [f"app-{i}" for i in range(apps)])
    serve = Serve(repo)
    try:
        serve.wait_synced()
        time.sleep(5)
        return serve.rss_kb()
    finally:
        serve.stop()
        repo.cleanup()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--apps", type=int, default=100)
    parser.add_argument("--no-webhooks", action="store_true", help="leave the intake to bench/webhooks.sh")
    args = parser.parse_args()
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "railyard", "--example", "engine_floor"], cwd=ROOT, check=True)
    ensure_image()
    total, floor = latency(args.runs)
    rps, peak = (None, None) if args.no_webhooks else throughput()
    rss = idle_rss(args.apps)
    print(f"\ncommit-to-serving, median of {args.runs}: {total:.0f} ms; engine create+start of the same container: "
          f"{floor:.0f} ms; railyard's own overhead: {total - floor:.0f} ms (target < 300 ms)")
    if rps is not None:
        print(f"webhooks: {rps:.0f} signed requests/s, peak RSS {peak / 1024:.1f} MB (target < 50 MB)")
    print(f"idle RSS with {args.apps} apps running: {rss / 1024:.1f} MB")
    print(f"ROW commit_to_serving_ms {total:.0f}")
    print(f"ROW commit_to_serving_floor_ms {floor:.0f}")
    print(f"ROW docker_idle_rss_mb {rss / 1024:.1f}")


if __name__ == "__main__":
    main()
