"""moeserve scraped by a real Prometheus (Debian's package), checked through its HTTP API.

Starts moeserve and Prometheus on loopback (scrape interval 1 s), drives a bounded load, then
 (a) evaluates every PromQL expression of the Grafana dashboard and asserts each returns data
     with finite values, ratios within [0, 1];
 (b) asserts per MoE layer that activations / routed tokens / experts in Prometheus equals the
     ratio from the responses' MoeStats (1e-6 relative), and routed tokens equal exactly;
 (c) asserts the per-expert counters sum to the activation counter.
"""
import argparse
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")
sys.path.insert(0, os.path.join(ROOT, "tests"))
from live_server import LiveServer  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def query(prom, expr):
    url = f"http://{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise AssertionError(f"query failed: {expr}: {body}")
    return body["data"]["result"]


def wait(what, predicate, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if predicate():
                return
        except Exception:  # noqa: BLE001 - the endpoint may not be up yet
            pass
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}")


def dashboard_exprs(path):
    exprs = []
    for panel in json.load(open(path))["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$__rate_interval", "30s").replace("$__interval", "5s")
            exprs.append((panel["title"], expr))
    return exprs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--moeserve", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--stubs", required=True)
    ap.add_argument("--prometheus", default="/usr/bin/prometheus")
    a = ap.parse_args()
    sys.path.insert(0, a.stubs)
    import grpc
    from moeserve.v1 import inference_pb2 as pb, inference_pb2_grpc as pb_grpc

    if not os.path.exists(a.prometheus):
        raise SystemExit(f"{a.prometheus} not found: scripts/setup.sh installs Debian's prometheus package")
    metrics_port = free_port()
    with LiveServer(a.moeserve, a.model, metrics_listen=f"127.0.0.1:{metrics_port}") as server, \
            tempfile.TemporaryDirectory(prefix="moeserve-prom-") as tmp:
        prom = f"127.0.0.1:{free_port()}"
        config = os.path.join(tmp, "prometheus.yml")
        with open(config, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n"
                    f"  - job_name: moeserve\n    static_configs:\n      - targets: ['127.0.0.1:{metrics_port}']\n")
        log = open(os.path.join(tmp, "prometheus.log"), "w")
        proc = subprocess.Popen([a.prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp}/data",
                                 f"--web.listen-address={prom}"], stdout=log, stderr=subprocess.STDOUT)
        try:
            wait("the scrape target to be up", lambda: any(
                t["health"] == "up" for t in json.load(urllib.request.urlopen(
                    f"http://{prom}/api/v1/targets", timeout=5))["data"]["activeTargets"]))

            # Bounded load: 24 greedy requests of different lengths, six at a time.
            stub = pb_grpc.InferenceStub(grpc.insecure_channel(server.target))
            finals, lock = [], threading.Lock()

            def worker(indices):
                for i in indices:
                    req = pb.GenerateRequest(token_ids=pb.TokenIds(ids=[1] + [5 + (i * 7 + j) % 900 for j in range(3 + i)]),
                                             max_new_tokens=4 + (i % 5) * 6, ignore_eos=True)
                    last = None
                    for chunk in stub.Generate(req, timeout=60):
                        last = chunk
                    with lock:
                        finals.append(last)
            threads = [threading.Thread(target=worker, args=(range(k, 24, 6),)) for k in range(6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert len(finals) == 24
            generated = sum(f.completion_tokens for f in finals)
            wait("Prometheus to scrape the final counters", lambda: float(
                query(prom, "moeserve_generation_tokens_total")[0]["value"][1]) == generated)

            # (a) every dashboard expression returns finite data.
            exprs = dashboard_exprs(os.path.join(ROOT, "deploy", "grafana", "dashboards", "moeserve.json"))
            assert len(exprs) >= 15, exprs
            for title, expr in exprs:
                result = query(prom, expr)
                assert result, f"panel '{title}': no data for {expr}"
                for series in result:
                    value = float(series["value"][1])
                    assert math.isfinite(value), f"panel '{title}': non-finite {value} in {series} for {expr}"
                    if "_ratio" in expr:  # moeserve_moe_activation_ratio, moeserve_kv_cache_usage_ratio
                        assert 0.0 <= value <= 1.0, f"panel '{title}': ratio {value} outside [0, 1]"
            print(f"dashboard: {len(exprs)} expressions return finite data")

            # (b) per-layer activation ratio and routed tokens equal the responses' MoeStats.
            stats = {}
            for f in finals:
                for layer in f.moe_stats.layers:
                    s = stats.setdefault(layer.layer, [0, 0, layer.num_experts])
                    s[0] += layer.routed_tokens
                    s[1] += layer.expert_activations
            tokens = {int(r["metric"]["layer"]): float(r["value"][1]) for r in query(prom, "moeserve_moe_routed_tokens_total")}
            acts = {int(r["metric"]["layer"]): float(r["value"][1])
                    for r in query(prom, "moeserve_moe_expert_activations_total")}
            per_expert = {int(r["metric"]["layer"]): float(r["value"][1])
                          for r in query(prom, "sum by (layer) (moeserve_moe_expert_tokens_total)")}
            assert stats and set(stats) == set(tokens), (stats, tokens)
            for layer, (t, act, experts) in stats.items():
                assert tokens[layer] == t, f"layer {layer}: Prometheus routed {tokens[layer]}, MoeStats {t}"
                prom_ratio = acts[layer] / tokens[layer] / experts
                ref_ratio = act / t / experts
                assert abs(prom_ratio - ref_ratio) <= 1e-6 * ref_ratio, (layer, prom_ratio, ref_ratio)
                # (c) per-expert load sums to the activations.
                assert per_expert[layer] == acts[layer], (layer, per_expert[layer], acts[layer])
                print(f"layer {layer}: {t} tokens, activation ratio {prom_ratio:.6f} (MoeStats {ref_ratio:.6f})")
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            log.close()
    print("prometheus_test: PASS")


if __name__ == "__main__":
    main()
