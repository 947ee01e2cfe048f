#!/usr/bin/env python3
"""Failover benchmark: two `railyard serve` replicas on one PostgreSQL, Docker backend, DEFAULT lease timings
(lease 15 s, renew deadline 10 s, retry 2 s: controller-runtime's). Each run commits a change the leader has not
seen (no poll, no webhook), kills the leader with SIGKILL, and times until the other replica has completed the
reconcile that applies it (its API says synced at the new commit). The killed replica is started again as a
follower before the next run. Prints each run, the median and the worst.

PostgreSQL is a throwaway cluster (Debian's `postgresql`: initdb and pg_ctl in a temporary directory, as the
`postgres` user when run as root), on a loopback port the OS picked. The app is Debian's static busybox FROM
scratch, built locally (no registry here).

Usage: bench/failover.py [RUNS]   (default 5; a debug build serves: the time is the lease's, not the binary's)
"""
import glob
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 5
IMAGE = "railyard-bench/busybox:1"
PROJECT = f"rybench-failover-{os.getpid()}"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(*args, **kwargs):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kwargs)


def postgres_bin():
    found = shutil.which("initdb")
    if found:
        return os.path.dirname(os.path.realpath(found))
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not candidates:
        sys.exit("PostgreSQL is missing: run scripts/install-deps (Debian's postgresql)")
    return os.path.dirname(candidates[-1])


class Postgres:
    def __init__(self, work):
        self.bin = postgres_bin()
        self.dir = os.path.join(work, "pg")
        os.makedirs(self.dir)
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []
        if self.as_user:
            shutil.chown(self.dir, "postgres")
            os.chmod(work, 0o755)
        self.port = free_port()
        run(*self.as_user, f"{self.bin}/initdb", "-D", f"{self.dir}/data", "-U", "railyard", "--auth=trust")
        run(*self.as_user, f"{self.bin}/pg_ctl", "start", "-w", "-D", f"{self.dir}/data", "-l", f"{self.dir}/log",
            "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1")
        run(f"{self.bin}/psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "railyard", "-d", "postgres",
            "-c", "CREATE DATABASE bench")
        self.url = f"postgres://railyard@127.0.0.1:{self.port}/bench?sslmode=disable"

    def stop(self):
        subprocess.run([*self.as_user, f"{self.bin}/pg_ctl", "stop", "-m", "immediate", "-D", f"{self.dir}/data"],
                       capture_output=True)


def build_image(work):
    context = os.path.join(work, "image")
    os.makedirs(context)
    shutil.copy("/bin/busybox", os.path.join(context, "busybox"))
    with open(os.path.join(context, "Dockerfile"), "w") as f:
        f.write('FROM scratch\nCOPY busybox /bin/busybox\nRUN ["/bin/busybox", "--install", "-s", "/bin"]\n')
    run("docker", "build", "-q", "--force-rm", "-t", IMAGE, context)


def write_app(repo, message):
    os.makedirs(os.path.join(repo, "apps"), exist_ok=True)
    with open(os.path.join(repo, "apps", "web.yaml"), "w") as f:
        f.write(
            f"kind: App\nname: web\nimage: {IMAGE}\npull: never\n"
            'command: ["sh", "-c", "mkdir -p /www && echo \\"$MESSAGE\\" > /www/index.html && '
            'exec httpd -f -p 8080 -h /www"]\n'
            f'env: {{ MESSAGE: "{message}" }}\nports: [{{ name: http, port: 8080 }}]\nstopGracePeriod: 1s\n'
        )


def git(repo, *args):
    return run("git", "-C", repo, "-c", "user.name=bench", "-c", "user.email=bench@railyard.dev",
               "-c", "commit.gpgsign=false", *args).stdout.strip()


class Replica:
    def __init__(self, railyard, repo, store, identity, work):
        self.identity = identity
        self.state = tempfile.mkdtemp(prefix=f"{identity}-", dir=work)
        self.log = open(os.path.join(self.state, "serve.log"), "w")
        self.process = subprocess.Popen(
            [railyard, "serve", "--repo", f"file://{repo}", "--state-dir", self.state, "--listen", "127.0.0.1:0",
             "--store", store, "--leader-election", "store", "--identity", identity,
             "--poll-interval", "1h", "--drift-interval", "1h"],
            stdout=subprocess.PIPE, stderr=self.log, text=True, env={**os.environ, "RUST_LOG": "info"})
        line = self.process.stdout.readline()
        self.port = int(line.split("http://")[1].split()[0].rsplit(":", 1)[1])

    def get(self, path):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as answer:
            return json.load(answer)

    def leads(self):
        try:
            return bool((self.get("/api/v1/leader")["election"] or {}).get("leading"))
        except OSError:
            return False

    def synced_at(self, sha):
        try:
            env = self.get("/api/v1/environments/production")
        except OSError:
            return False
        return env.get("syncStatus") == "synced" and (env.get("commit") or {}).get("sha") == sha

    def kill(self):
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()


def wait(what, check, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    sys.exit(f"timed out waiting for {what}")


def main():
    subprocess.run([os.path.join(ROOT, "scripts/install-deps")], check=True, stdout=subprocess.DEVNULL)
    run("cargo", "build", "--quiet", "--bin", "railyard", cwd=ROOT)
    railyard = os.path.join(ROOT, "target/debug/railyard")
    work = tempfile.mkdtemp(prefix="railyard-failover-")
    postgres = None
    replicas = []
    try:
        build_image(work)
        postgres = Postgres(work)
        repo = os.path.join(work, "repo")
        os.makedirs(repo)
        with open(os.path.join(repo, "railyard.yaml"), "w") as f:
            f.write(f"kind: Project\nname: {PROJECT}\n")
        write_app(repo, "run 0")
        git(repo, "init", "-q", "-b", "main")
        git(repo, "add", "-A")
        head = (git(repo, "commit", "-q", "-m", "run 0"), git(repo, "rev-parse", "HEAD"))[1]
        replicas = [Replica(railyard, repo, postgres.url, f"replica-{n}", work) for n in (1, 2)]
        wait("a leader", lambda: sum(r.leads() for r in replicas) == 1)
        leader = next(r for r in replicas if r.leads())
        wait("the first sync", lambda: leader.synced_at(head))
        times = []
        for n in range(1, RUNS + 1):
            leader = next(r for r in replicas if r.leads())
            survivor = next(r for r in replicas if r is not leader)
            write_app(repo, f"run {n}")
            git(repo, "add", "-A")
            git(repo, "commit", "-q", "-m", f"run {n}")
            head = git(repo, "rev-parse", "HEAD")
            killed = time.monotonic()
            leader.kill()
            wait("the survivor's reconcile", lambda: survivor.synced_at(head))
            took = time.monotonic() - killed
            times.append(took)
            print(f"run {n}: {took:.1f} s from SIGKILL of {leader.identity} to {survivor.identity}'s completed reconcile",
                  flush=True)
            replicas.remove(leader)
            replicas.append(Replica(railyard, repo, postgres.url, f"{leader.identity}-again{n}", work))
            wait("the restarted replica to follow", lambda: replicas[-1].get("/api/v1/leader")["election"]["leader"])
        print(f"failover (default timings: lease 15 s, renew deadline 10 s, retry 2 s), {RUNS} runs: "
              f"median {statistics.median(times):.1f} s, worst {max(times):.1f} s, best {min(times):.1f} s")
    finally:
        for replica in replicas:
            if replica.process.poll() is None:
                replica.process.terminate()
                try:
                    replica.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    replica.kill()
        subprocess.run(f"docker ps -aq --filter label=com.docker.compose.project={PROJECT} | xargs -r docker rm -f",
                       shell=True, capture_output=True)
        subprocess.run(f"docker network ls -q --filter label=com.docker.compose.project={PROJECT} "
                       "| xargs -r docker network rm", shell=True, capture_output=True)
        if postgres:
            postgres.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
