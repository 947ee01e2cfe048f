#!/usr/bin/env python3
"""Cost of one route change in Caddy with 1,000 domains loaded, per route layout (run by bench/caddy.sh).

Caddy reloads its whole config on any change (POST /load, or PATCH of one route by @id alike), so a change costs
what provisioning the whole config costs. Each layout is loaded, then one domain's upstream is changed by a PATCH
of the smallest piece that holds it (median of 9):
  per-route proxy  railyard's layout: one route per domain (vars with its spec, reverse_proxy with its own dials)
  static routes    one route per domain answering statically: the floor of 1,000 routes of any kind
  host map         one `map` handler (host -> dial) and one shared reverse_proxy whose dial is a placeholder
  host map + own   the map for 999 domains, and the one being switched on a route of its own with real dials, as
                   draining needs (Caddy counts requests in flight by the dial as written, placeholder or not)
  environment map  railyard's layout since: one route for the environment (host matcher, `map` from host to replica
                   count, app, the rest of the spec and dials), one `reverse_proxy` per replica count with dynamic upstreams, which
                   Caddy counts by the address they resolve to
Usage: caddy_layouts.py <admin-port> <http-port>
"""
import http.client
import json
import statistics
import sys
import time

ADMIN, HTTP = int(sys.argv[1]), int(sys.argv[2])
COUNT = 1000
CATCH_ALL = {"handle": [{"handler": "static_response", "status_code": 404}], "terminal": True}


def request(method, path, body):
    connection = http.client.HTTPConnection("127.0.0.1", ADMIN, timeout=30)
    connection.request(method, path, body=json.dumps(body), headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    data = response.read()
    if response.status >= 300:
        sys.exit(f"{method} {path}: {response.status} {data[:300]!r}")


def host(i):
    return f"app-{i}.bench.test"


def proxy_route(i):
    spec = {"host": host(i), "aliases": [f"www.{host(i)}"], "app": f"app-{i}", "port": "http", "tls": "off"}
    return {
        "@id": f"route-{i}",
        "match": [{"host": [host(i), f"www.{host(i)}"]}],
        "handle": [
            {"handler": "vars", "railyard_spec": json.dumps(spec)},
            {
                "handler": "reverse_proxy",
                "upstreams": [{"dial": f"127.0.0.1:{20000 + i}"}],
                "load_balancing": {
                    "selection_policy": {"policy": "round_robin"},
                    "try_duration": "5s",
                    "try_interval": "50ms",
                    "retry_match": [{"method": ["GET", "HEAD", "OPTIONS"]}],
                },
            },
        ],
        "terminal": True,
    }


def static_route(i):
    return {"@id": f"route-{i}", "match": [{"host": [host(i), f"www.{host(i)}"]}],
            "handle": [{"handler": "static_response", "body": "x"}], "terminal": True}


def host_map(first=0):
    mappings = [{"input": name, "outputs": [f"127.0.0.1:{20000 + i}"]}
                for i in range(first, COUNT) for name in (host(i), f"www.{host(i)}")]
    return [
        {"@id": "hosts", "handle": [{"handler": "map", "source": "{http.request.host}",
                                      "destinations": ["{railyard.dial}"], "mappings": mappings,
                                      "defaults": ["none"]}]},
        # Unknown hosts fall through to the catch-all's 404.
        {"match": [{"not": [{"vars": {"{railyard.dial}": ["none"]}}]}],
         "handle": [{"handler": "reverse_proxy", "upstreams": [{"dial": "{railyard.dial}"}]}], "terminal": True},
    ]


def environment_map():
    mappings = []
    for i in range(COUNT):
        for name in (host(i), f"www.{host(i)}"):
            # The rest of the spec, as an object: host, aliases and app are the rows themselves.
            spec = {"port": "http", "containerPort": 8080, "tls": "off"} if name == host(i) else None
            mappings.append({"input": name, "outputs": ["1", f"app-{i}", spec, host(i), "127.0.0.1", str(20000 + i)]})
    proxy = {"handler": "reverse_proxy",
             "dynamic_upstreams": {"source": "multi", "sources": [
                 {"source": "a", "name": "{railyard.h0}", "port": "{railyard.p0}"}]},
             "load_balancing": proxy_route(0)["handle"][1]["load_balancing"]}
    return [{"@id": "env", "match": [{"host": [m["input"] for m in mappings]}], "terminal": True, "handle": [
        {"handler": "map", "source": "{http.request.host}", "mappings": mappings,
         "destinations": ["{railyard.n}", "{railyard.app}", "{railyard.domain}", "{railyard.host}", "{railyard.h0}",
                          "{railyard.p0}"]},
        {"handler": "subroute", "routes": [{"match": [{"vars": {"{railyard.n}": ["1"]}}], "handle": [proxy]},
                                           {"handle": [{"handler": "static_response", "status_code": 503}]}]}]}]


LAYOUTS = {
    "per-route proxy": ([proxy_route(i) for i in range(COUNT)], "/id/route-0/handle/1/upstreams",
                        lambda run: [{"dial": f"127.0.0.1:{40000 + run}"}]),
    "static routes": ([static_route(i) for i in range(COUNT)], "/id/route-0/handle/0/body", lambda run: f"v{run}"),
    "host map": (host_map(), "/id/hosts/handle/0/mappings/0",
                 lambda run: {"input": host(0), "outputs": [f"127.0.0.1:{40000 + run}"]}),
    "host map + own": ([proxy_route(0)] + host_map(first=1), "/id/route-0/handle/1/upstreams",
                       lambda run: [{"dial": f"127.0.0.1:{40000 + run}"}]),
    "environment map": (environment_map(), "/id/env/handle/0/mappings/0/outputs/5", lambda run: str(40000 + run)),
}

for name, (routes, path, value) in LAYOUTS.items():
    request("POST", "/load", {
        "admin": {"listen": f"127.0.0.1:{ADMIN}"},
        "apps": {"http": {"http_port": HTTP, "servers": {"bench": {"listen": [f"127.0.0.1:{HTTP}"],
                                                                   "routes": routes + [CATCH_ALL]}}}},
    })
    samples = []
    for run in range(9):
        started = time.perf_counter()
        request("PATCH", path, value(run))
        samples.append((time.perf_counter() - started) * 1000)
    print(f"one route change, {COUNT} domains, {name}: {statistics.median(samples):.0f} ms")
