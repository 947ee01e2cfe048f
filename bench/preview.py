#!/usr/bin/env python3
"""Preview benchmark (run by bench/preview.sh): from a signed GitHub `pull_request` "opened" webhook to the preview
answering at its own host through Caddy, against the engine's own create+start of the same container in the same run.

A config repository (one app without a health check, the default; one Domain; previews on) is served over git://
on loopback; `railyard serve` runs with the default settings and a loopback Caddy. Each run publishes a new pull
request's head as `refs/pull/N/head`, sends the webhook, polls Caddy every 5 ms for the preview's answer, then closes
the pull request and waits until nothing of the preview remains. Medians of RUNS.
Usage: preview.py <railyard> <engine_floor> <image> <runs>
"""
import hashlib
import hmac
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

RAILYARD, FLOOR, IMAGE, RUNS = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
SECRET = b"bench-webhook-secret"


def port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(what, check, timeout=60.0, every=0.005):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(every)
    sys.exit(f"timed out waiting for {what}")


def get(port_, path, host=None):
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port_, timeout=5)
        connection.request("GET", path, headers={"Host": host} if host else {})
        response = connection.getresponse()
        return response.status, response.read().decode()
    except OSError:
        return None, ""


def git(*args, cwd):
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def app(message):
    return (
        f"kind: App\nname: web\nimage: {IMAGE}\npull: never\n"
        'command: ["sh", "-c", "mkdir -p /www && echo \\"$MESSAGE\\" > /www/index.html && exec httpd -f -p 8080 -h /www"]\n'
        f'env: {{ MESSAGE: "{message}" }}\nports: [{{ name: http, port: 8080 }}]\nstopGracePeriod: 1s\n'
    )


def main():
    work = tempfile.mkdtemp()
    processes = []
    try:
        repo = os.path.join(work, "config")
        os.makedirs(os.path.join(repo, "apps"))
        os.makedirs(os.path.join(repo, "domains"))
        with open(os.path.join(repo, "railyard.yaml"), "w") as f:
            f.write('kind: Project\nname: pvbench\npreviews:\n  enabled: true\n  localImages: true\n  hostTemplate: "{app}-{env}.preview.test"\n')
        with open(os.path.join(repo, "apps", "web.yaml"), "w") as f:
            f.write(app("production"))
        with open(os.path.join(repo, "domains", "web.yaml"), "w") as f:
            f.write("kind: Domain\nhost: web.bench.test\napp: web\nport: http\ntls: off\n")
        env = dict(os.environ, GIT_AUTHOR_NAME="bench", GIT_AUTHOR_EMAIL="b@b", GIT_COMMITTER_NAME="bench",
                   GIT_COMMITTER_EMAIL="b@b")
        for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "initial"]):
            subprocess.run(["git", *args], cwd=repo, check=True, env=env)
        git_port = port()
        daemon = os.path.join(git("--exec-path", cwd=repo), "git-daemon")
        processes.append(subprocess.Popen([daemon, "--reuseaddr", "--export-all", "--listen=127.0.0.1",
                                           f"--port={git_port}", f"--base-path={work}", work]))
        admin, http_port, https_port = port(), port(), port()
        caddy_dir = os.path.join(work, "caddy")
        os.makedirs(caddy_dir)
        with open(os.path.join(caddy_dir, "caddy.json"), "w") as f:
            json.dump({"admin": {"listen": f"127.0.0.1:{admin}"}}, f)
        caddy_env = dict(os.environ, HOME=caddy_dir, XDG_DATA_HOME=caddy_dir + "/data",
                         XDG_CONFIG_HOME=caddy_dir + "/config")
        processes.append(subprocess.Popen(["caddy", "run", "--config", caddy_dir + "/caddy.json"], env=caddy_env,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        listen = port()
        # BENCH_RUST_LOG=railyard=debug shows where a preview's time goes (the daemon's log on stderr, with timestamps).
        serve_env = dict(os.environ, RAILYARD_WEBHOOK_SECRET=SECRET.decode(), RUST_LOG=os.environ.get("BENCH_RUST_LOG", "warn"))
        wait("git daemon", lambda: socket.socket().connect_ex(("127.0.0.1", git_port)) == 0, 10)
        wait("caddy", lambda: socket.socket().connect_ex(("127.0.0.1", admin)) == 0, 10)
        processes.append(subprocess.Popen(
            [RAILYARD, "serve", "--repo", f"git://127.0.0.1:{git_port}/config", "--state-dir", work + "/state",
             "--listen", f"127.0.0.1:{listen}", "--caddy-admin", f"http://127.0.0.1:{admin}",
             "--proxy-http", f"127.0.0.1:{http_port}", "--proxy-https", f"127.0.0.1:{https_port}"],
            env=serve_env, stdout=subprocess.DEVNULL))
        wait("production", lambda: get(http_port, "/", "web.bench.test")[1].strip() == "production", 120)

        previews, floors = [], []
        for run in range(1, RUNS + 1):
            git("checkout", "-q", "-b", f"change-{run}", "main", cwd=repo)
            with open(os.path.join(repo, "apps", "web.yaml"), "w") as f:
                f.write(app(f"preview {run}"))
            subprocess.run(["git", "commit", "-qam", f"change {run}"], cwd=repo, check=True, env=env)
            sha = git("rev-parse", "HEAD", cwd=repo)
            git("checkout", "-q", "main", cwd=repo)
            git("update-ref", f"refs/pull/{run}/head", sha, cwd=repo)
            host = f"web-pr-{run}.preview.test"
            started = time.monotonic()
            event(listen, "opened", run, sha)
            wait(f"preview {run}", lambda: get(http_port, "/", host)[1].strip() == f"preview {run}", 120)
            previews.append((time.monotonic() - started) * 1000)
            event(listen, "closed", run, sha)
            wait(f"teardown {run}", lambda: not subprocess.run(
                ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project=pvbench-pr-{run}"],
                capture_output=True, text=True).stdout.strip(), 120, 0.05)
            floor = subprocess.run([FLOOR, IMAGE, "1", f"pvfloor-{os.getpid()}-{run}"], capture_output=True,
                                   text=True, check=True)
            floors.append(float(floor.stdout.strip().split()[0]))
            subprocess.run(f"docker ps -aq --filter label=dev.railyard.bench=pvfloor-{os.getpid()}-{run} | xargs -r docker rm -f; "
                           f"docker network rm pvfloor-{os.getpid()}-{run}_default", shell=True, capture_output=True)
        preview, floor = statistics.median(previews), statistics.median(floors)
        print(f"PR opened webhook -> preview serving through Caddy: {preview:.0f} ms (median of {RUNS}: "
              f"{', '.join(f'{p:.0f}' for p in previews)})")
        print(f"engine create+start of the same container: {floor:.0f} ms (median of {RUNS})")
        print(f"ratio: {preview / floor:.1f}x the engine floor")
        print(f"ROW preview_ms {preview:.0f}")
        print(f"ROW preview_floor_ms {floor:.0f}")
    finally:
        for process in reversed(processes):
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        subprocess.run("docker ps -aq --filter label=com.docker.compose.project=pvbench | xargs -r docker rm -f; "
                       "docker network ls -q --filter label=com.docker.compose.project=pvbench | xargs -r docker network rm",
                       shell=True, capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


def event(listen, action, number, sha):
    body = json.dumps({
        "action": action, "number": number,
        "pull_request": {"number": number, "title": f"change {number}", "user": {"login": "bench"}, "labels": [],
                         "head": {"sha": sha, "ref": f"change-{number}", "repo": {"full_name": "acme/config"}},
                         "base": {"sha": sha, "ref": "main", "repo": {"full_name": "acme/config"}}},
    }).encode()
    signature = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
    connection = http.client.HTTPConnection("127.0.0.1", listen, timeout=10)
    connection.request("POST", "/hooks/github", body=body, headers={
        "X-GitHub-Event": "pull_request", "X-Hub-Signature-256": signature, "Content-Type": "application/json"})
    response = connection.getresponse()
    response.read()
    if response.status != 202:
        sys.exit(f"webhook answered {response.status}")


if __name__ == "__main__":
    main()
