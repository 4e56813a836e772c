#!/usr/bin/python3
"""Serving benchmark: moectl bench against a live moeserve on the DECO-0.1B shape.

    /usr/bin/python3 bench/serving_bench.py [--model DIR] [--runs 3]

1. Concurrency sweep (1, 4, 16, 64): output tokens/s, TTFT and ITL p50/p99 (vLLM definitions,
   see clients/moectl/bench.cc), median of --runs runs each.
2. Serving overhead at concurrency 1: server ITL p50 vs the engine's own decode time per token
   (build/bench/decode_bench in the same invocation, same model, dtype and threads).
3. Metrics overhead: output tokens/s with metrics on vs off at concurrency 1 and 16, runs
   interleaved (on, off, on, off, ...), medians compared.
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
                          f"--threads={threads}", "--prompt_len=32", "--new_tokens=128", f"--runs={runs}"],
                         capture_output=True, text=True, check=True, timeout=900).stdout
    line = next(l for l in out.splitlines() if l.startswith("decode tokens/s"))
    tokens_per_s = float(line.split("median")[1].split()[0])
    return 1000.0 / tokens_per_s


def main():
    ap = argparse.ArgumentParser()
    # The CPU suite's checkpoint: DECO-0.1B with routers calibrated to 20 % activation (issue 6).
    ap.add_argument("--model", default=os.path.join(BUILD, "models", "deco-0.1B-bf16-a20"))
    ap.add_argument("--target-activation", type=float, default=0.2,
                    help="routers are calibrated to this ratio when the model has to be generated")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    if not os.path.exists(os.path.join(a.model, "model.safetensors")):
        subprocess.run(["/usr/bin/python3", os.path.join(ROOT, "tools", "gen_tiny_model.py"), "--out", a.model,
                        "--variant", "deco", "--size", "0.1B", "--seed", "1", "--dtype", "bf16",
                        "--target-activation", str(a.target_activation)], check=True)
    common = [f"model.threads={a.threads}", "model.dtype=bf16", "scheduler.max_running=64",
              "scheduler.max_batch_tokens=512", "scheduler.kv_memory_mb=1024"]
    result = {"model": a.model, "threads": a.threads, "runs": a.runs, "input_len": 32, "output_len": 128}

    sweep = {}
    with LiveServer(MOESERVE, a.model, common) as server:
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

    engine_ms = engine_decode_ms(a.model, a.threads, max(5, a.runs))
    result["engine_decode_ms_per_token"] = engine_ms
    result["serving_overhead_c1"] = sweep[1]["itl_p50_ms"] / engine_ms - 1.0
    print(f"engine decode {engine_ms:.2f} ms/token; server ITL p50 at c=1 {sweep[1]['itl_p50_ms']:.2f} ms "
          f"-> overhead {100 * result['serving_overhead_c1']:+.1f} %", flush=True)

    overhead = {}
    with LiveServer(MOESERVE, a.model, common, metrics_listen="127.0.0.1:0") as on, \
            LiveServer(MOESERVE, a.model, common) as off:
        for concurrency, n in [(1, 4), (16, 32)]:
            with_metrics, without = [], []
            for _ in range(max(5, a.runs)):  # the bar is 2 %: more pairs than the sweep's runs
                with_metrics.append(bench(on.target, concurrency, n)["output_tokens_per_s"])
                without.append(bench(off.target, concurrency, n)["output_tokens_per_s"])
            on_tps, off_tps = statistics.median(with_metrics), statistics.median(without)
            overhead[concurrency] = {"metrics_on_tokens_per_s": on_tps, "metrics_off_tokens_per_s": off_tps,
                                     "difference": on_tps / off_tps - 1.0}
            print(f"metrics overhead c={concurrency}: {json.dumps(overhead[concurrency])}", flush=True)
    result["metrics_overhead"] = overhead
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "results", "serving.json"), "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
