#!/usr/bin/python3
"""Prefix caching on a shared-prefix workload: every request is one shared 1,000-token prefix (a
long system prompt) plus its own 32-token suffix, 16 new tokens each, at concurrency 1 and 8;
TTFT and output throughput with scheduler.prefix_cache on and off, in one invocation (the two
servers run side by side and the runs alternate, so the VM's drift hits both alike).

    /usr/bin/python3 bench/prefix_cache_bench.py [--model DIR] [--runs 3]

Without --model it generates the DECO-0.1B shape (bf16, 20 % activation) in build/models.
"""
import argparse
import os
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.join(ROOT, "build", "python"))
from live_server import LiveServer  # noqa: E402
import grpc  # noqa: E402
from moeserve.v1 import inference_pb2 as pb, inference_pb2_grpc as pb_grpc  # noqa: E402

MOESERVE = os.path.join(ROOT, "build", "server", "moeserve")
PREFIX, SUFFIX, NEW = 1000, 32, 16


def prompts(n, vocab, salt):
    rng = __import__("random").Random(7)
    prefix = [1] + [rng.randrange(3, vocab) for _ in range(PREFIX - 1)]
    rng = __import__("random").Random(salt)
    return [prefix + [rng.randrange(3, vocab) for _ in range(SUFFIX)] for _ in range(n)]


def one(stub, prompt, out):
    req = pb.GenerateRequest(token_ids=pb.TokenIds(ids=prompt), max_new_tokens=NEW, ignore_eos=True)
    start, first, tokens = time.perf_counter(), None, 0
    for chunk in stub.Generate(req, timeout=600):
        if chunk.token_ids and first is None:
            first = time.perf_counter() - start
        tokens += len(chunk.token_ids)
    out.append((first, tokens))


def run(target, concurrency, n, vocab, salt):
    stub = pb_grpc.InferenceStub(grpc.insecure_channel(target))
    one(stub, prompts(1, vocab, 999)[0], [])  # the prefix is in the cache (where caching is on)
    out, threads, todo = [], [], prompts(n, vocab, salt)
    start = time.perf_counter()
    for i in range(0, n, concurrency):
        threads = [threading.Thread(target=one, args=(stub, p, out)) for p in todo[i:i + concurrency]]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    wall = time.perf_counter() - start
    return statistics.median(f for f, _ in out), sum(t for _, t in out) / wall


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(ROOT, "build", "models", "deco-0.1B-bf16-act20"))
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    if not os.path.exists(os.path.join(a.model, "model.safetensors")):
        subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "tools", "gen_tiny_model.py"), "--out", a.model,
                        "--variant", "deco", "--size", "0.1B", "--seed", "1", "--dtype", "bf16",
                        "--target-activation", "0.2"], check=True)
    common = ["model.dtype=bf16", "scheduler.kv_memory_mb=1024", "scheduler.max_batch_tokens=2048",
              "scheduler.prefill_chunk=1024"]
    with LiveServer(MOESERVE, a.model, common + ["scheduler.prefix_cache=true"]) as on, \
            LiveServer(MOESERVE, a.model, common + ["scheduler.prefix_cache=false"]) as off:
        vocab = pb_grpc.InferenceStub(grpc.insecure_channel(on.target)).GetModelInfo(pb.GetModelInfoRequest()).vocab_size
        print(f"model {a.model}; {PREFIX}-token shared prefix + {SUFFIX}-token suffix, {NEW} new tokens; "
              f"medians of {a.runs} alternating runs")
        print("| concurrency | requests | TTFT p50 off (ms) | TTFT p50 on (ms) | TTFT off/on | tok/s off | tok/s on | on/off |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for concurrency, n in [(1, 4), (8, 8)]:
            res = {"on": [], "off": []}
            for r in range(a.runs):
                for name, server in ([("on", on), ("off", off)] if r % 2 == 0 else [("off", off), ("on", on)]):
                    res[name].append(run(server.target, concurrency, n, vocab, 100 * r + concurrency))
            med = {k: (statistics.median(x for x, _ in v), statistics.median(y for _, y in v)) for k, v in res.items()}
            print(f"| {concurrency} | {n} | {1000 * med['off'][0]:.0f} | {1000 * med['on'][0]:.0f} | "
                  f"{med['off'][0] / med['on'][0]:.2f} | {med['off'][1]:.1f} | {med['on'][1]:.1f} | "
                  f"{med['on'][1] / med['off'][1]:.2f} |", flush=True)


if __name__ == "__main__":
    main()
