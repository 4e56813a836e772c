#!/usr/bin/python3
"""Serving benchmark: moectl bench against a live moeserve on the DECO-0.1B shape.

    /usr/bin/python3 bench/serving_bench.py [--model DIR] [--runs 3]

1. Concurrency sweep (1, 4, 16, 64): output tokens/s, TTFT and ITL p50/p99 (vLLM definitions,
   see clients/moectl/bench.cc), median of --runs runs each.
2. Serving overhead at concurrency 1: server ITL p50 vs the engine's own decode time per token
   (build/bench/decode_bench in the same invocation, same model, dtype and threads).
   The two are run in alternation, five pairs at least, medians compared.
3. Metrics overhead: output tokens/s with metrics on vs off at concurrency 1 and 16, runs
   in back-to-back pairs (order alternating), medians and the median per-pair ratio.
--sections picks a subset (sweep, overhead, metrics); results merge into the JSON.
Results: printed, and written as JSON to bench/results/serving.json.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))
from live_server import LiveServer  # noqa: E402

BUILD = os.path.join(ROOT, "build")
MOESERVE = os.path.join(BUILD, "server", "moeserve")
MOECTL = os.path.join(BUILD, "clients", "moectl", "moectl")


def bench(target, concurrency, num_requests, input_len=32, output_len=128):
    out = subprocess.run([MOECTL, "bench", f"--target={target}", f"--concurrency={concurrency}",
                          f"--num_requests={num_requests}", f"--input_len={input_len}", f"--output_len={output_len}",
                          "--len_jitter=0", "--seed=1", "--json"], capture_output=True, text=True, check=True, timeout=900)
    return json.loads(out.stdout)


def median_of(results, path):
    values = []
    for r in results:
        v = r
        for key in path:
            v = v[key]
        values.append(v)
    return statistics.median(values)


def engine_decode_ms(model, threads, runs):
    out = subprocess.run([os.path.join(BUILD, "bench", "decode_bench"), f"--model={model}", "--dtype=bf16",
                          f"--threads={threads}", "--prompt_len=32", "--new_tokens=128", f"--runs={runs}", "--json"],
                         capture_output=True, text=True, check=True, timeout=900).stdout
    return 1000.0 / json.loads(out.strip().splitlines()[-1])["tokens_per_s"]


def main():
    ap = argparse.ArgumentParser()
    # The CPU suite's checkpoint: DECO-0.1B with routers calibrated to 20 % activation (issue 6).
    ap.add_argument("--model", default=os.path.join(BUILD, "models", "deco-0.1B-bf16-a20"))
    ap.add_argument("--target-activation", type=float, default=0.2,
                    help="routers are calibrated to this ratio when the model has to be generated")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sections", default="sweep,overhead,metrics",
                    help="comma-separated subset of sweep, overhead, metrics")
    a = ap.parse_args()
    sections = set(a.sections.split(","))
    if not os.path.exists(os.path.join(a.model, "model.safetensors")):
        subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "tools", "gen_tiny_model.py"), "--out", a.model,
                        "--variant", "deco", "--size", "0.1B", "--seed", "1", "--dtype", "bf16",
                        "--target-activation", str(a.target_activation)], check=True)
    common = [f"model.threads={a.threads}", "model.dtype=bf16", "scheduler.max_running=64",
              "scheduler.max_batch_tokens=512", "scheduler.kv_memory_mb=1024"]
    result = {"model": a.model, "threads": a.threads, "runs": a.runs, "input_len": 32, "output_len": 128}

    if "sweep" in sections:
        concurrency_sweep(a, common, result)
    if "overhead" in sections:
        serving_overhead(a, common, result)
    if "metrics" in sections:
        metrics_overhead(a, common, result)
    write(result)


def concurrency_sweep(a, common, result):
    sweep = {}
    with LiveServer(MOESERVE, a.model, common, metrics_listen="") as server:
        for concurrency, n in [(1, 4), (4, 8), (16, 32), (64, 64)]:
            runs = [bench(server.target, concurrency, n) for _ in range(a.runs)]
            sweep[concurrency] = {
                "output_tokens_per_s": median_of(runs, ["output_tokens_per_s"]),
                "ttft_p50_ms": 1000 * median_of(runs, ["ttft_s", "p50"]),
                "ttft_p99_ms": 1000 * median_of(runs, ["ttft_s", "p99"]),
                "itl_p50_ms": 1000 * median_of(runs, ["itl_s", "p50"]),
                "itl_p99_ms": 1000 * median_of(runs, ["itl_s", "p99"]),
                "tpot_mean_ms": 1000 * median_of(runs, ["tpot_s", "mean"]),
            }
            print(f"concurrency {concurrency:3d}: {json.dumps(sweep[concurrency])}", flush=True)
    result["sweep"] = sweep
    result["scaling_16_over_1"] = sweep[16]["output_tokens_per_s"] / sweep[1]["output_tokens_per_s"]


def serving_overhead(a, common, result):
    # Serving overhead: the engine alone and the server at c=1 in alternation (the VM's speed
    # drifts by several per cent over minutes, more than the 5 % being measured), medians.
    engine, server_itl = [], []
    with LiveServer(MOESERVE, a.model, common, metrics_listen="") as server:
        for _ in range(max(5, a.runs)):
            engine.append(engine_decode_ms(a.model, a.threads, 1))
            server_itl.append(1000 * bench(server.target, 1, 4)["itl_s"]["p50"])
    engine_ms, itl_ms = statistics.median(engine), statistics.median(server_itl)
    result["engine_decode_ms_per_token"] = engine_ms
    result["server_itl_p50_ms_c1"] = itl_ms
    result["engine_runs_ms"], result["server_itl_runs_ms"] = engine, server_itl
    result["serving_overhead_c1"] = itl_ms / engine_ms - 1.0
    print(f"engine decode {engine_ms:.2f} ms/token; server ITL p50 at c=1 {itl_ms:.2f} ms "
          f"-> overhead {100 * result['serving_overhead_c1']:+.1f} % (runs alternated: engine {engine}, "
          f"server {server_itl})", flush=True)


def metrics_overhead(a, common, result):
    overhead = {}
    with LiveServer(MOESERVE, a.model, common, metrics_listen="127.0.0.1:0") as on, \
            LiveServer(MOESERVE, a.model, common, metrics_listen="") as off:
        for concurrency, n in [(1, 4), (16, 32)]:
            with_metrics, without = [], []
            # The bar is 2 %, below this VM's drift over minutes: many back-to-back pairs, the
            # order alternating (on-off, off-on) so that neither side always runs first, and the
            # median of the per-pair ratios, which cancels the drift between pairs.
            for i in range(max(5, a.runs)):
                order = [(on, with_metrics), (off, without)]
                for server, out in order if i % 2 == 0 else order[::-1]:
                    out.append(bench(server.target, concurrency, n)["output_tokens_per_s"])
            on_tps, off_tps = statistics.median(with_metrics), statistics.median(without)
            pair_ratio = statistics.median(x / y for x, y in zip(with_metrics, without))
            overhead[concurrency] = {"metrics_on_tokens_per_s": on_tps, "metrics_off_tokens_per_s": off_tps,
                                     "difference": on_tps / off_tps - 1.0,
                                     "paired_difference": pair_ratio - 1.0,
                                     "runs_on": with_metrics, "runs_off": without}
            print(f"metrics overhead c={concurrency}: {json.dumps(overhead[concurrency])}", flush=True)
    result["metrics_overhead"] = overhead


def write(result):
    """Merges into bench/results/serving.json, so a run of some sections keeps the others."""
    path = os.path.join(ROOT, "bench", "results", "serving.json")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    merged = {}
    if os.path.exists(path):
        with open(path) as f:
            merged = json.load(f)
    merged.update(result)
    with open(path, "w") as f:
        json.dump(merged, f, indent=1)


if __name__ == "__main__":
    main()
