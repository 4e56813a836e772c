"""The server counts exactly what the engine routes: for one request on a fresh server, the
response's MoeStats and the /metrics counters equal the active experts in moeserve-run's
--dump-routing of the same token ids."""
import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests"))
from live_server import LiveServer  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--moeserve", required=True)
    ap.add_argument("--moeserve-run", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--stubs", required=True)
    a = ap.parse_args()
    sys.path.insert(0, a.stubs)
    import grpc
    from moeserve.v1 import inference_pb2 as pb, inference_pb2_grpc as pb_grpc

    ids = [1, 17, 230, 5, 88, 412, 9, 63, 300, 2]
    with tempfile.TemporaryDirectory() as tmp:
        dump = os.path.join(tmp, "routing.json")
        subprocess.run([a.moeserve_run, f"--model={a.model}", "--token-ids=" + ",".join(map(str, ids)),
                        "--max-new-tokens=0", f"--dump-routing={dump}", "--dtype=bf16"], check=True,
                       capture_output=True)
        layers = {l["layer"]: l for l in json.load(open(dump))["layers"] if l["kind"] == "moe"}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with LiveServer(a.moeserve, a.model, ["model.dtype=bf16"], metrics_listen=f"127.0.0.1:{port}") as server:
        stub = pb_grpc.InferenceStub(grpc.insecure_channel(server.target))
        # max_new_tokens=1: exactly the prompt is routed (the sampled token is never fed back).
        r = stub.Complete(pb.GenerateRequest(token_ids=pb.TokenIds(ids=ids), max_new_tokens=1, ignore_eos=True),
                          timeout=60)
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    metric = lambda name, layer: float(re.search(rf'^{name}{{layer="{layer}"}} (\S+)$', text, re.M).group(1))  # noqa: E731
    assert {l.layer for l in r.moe_stats.layers} == set(layers)
    for stat in r.moe_stats.layers:
        expected = sum(len(token) for token in layers[stat.layer]["active_experts"])
        assert stat.routed_tokens == len(ids), (stat.layer, stat.routed_tokens)
        assert stat.expert_activations == expected, (stat.layer, stat.expert_activations, expected)
        assert metric("moeserve_moe_routed_tokens_total", stat.layer) == len(ids)
        assert metric("moeserve_moe_expert_activations_total", stat.layer) == expected
        print(f"layer {stat.layer}: {expected} activations over {len(ids)} tokens in dump, MoeStats and /metrics")
    print("routing_dump_test: PASS")


if __name__ == "__main__":
    main()
