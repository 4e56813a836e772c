#!/usr/bin/python3
"""The CPU benchmark suite (issue: CPU performance), one command, everything in one invocation:

  /usr/bin/python3 bench/cpu_suite.py [--sizes 0.1B,0.5B] [--runs 5] [--threads 2]

For each model size (DECO shapes from tools/gen_tiny_model.py, bf16 checkpoints calibrated to
the target activation ratio, default 0.2; generated once under build/models/):
  - pp512 and tg128 tokens/s (llama-bench's definitions: a 512-token prompt in one step; 128
    decoded tokens after a BOS-only context) for f32, bf16 and int8 compute weights;
  - weight bytes read per decoded token and the roofline fraction (read bandwidth measured by
    the same decode_bench process);
  - bf16 with --dense_experts (every expert evaluated): sparse/dense speedup of the MoE layers
    (their summed wall time per step) and end to end;
  - PyTorch eager (bench/torch_eager_bench.py) on the same checkpoint, bf16, batch 1;
  - batch 1, 4, 16, 64 decoded in lockstep (what the scheduler's decode steps run), sparse and
    dense: aggregate tokens/s and the batch's union of active experts per MoE layer and step;
  - the two ratio bars (MoE sparse/dense, batch 16 / batch 1) also from --runs pairs of one-run
    processes alternating, so that both halves of each pair meet the same minute's bandwidth.
Writes bench/results/cpu_suite.json, bench/results/cpu_suite.md (the tables) and
bench/results/cpu_batch_sweep.png. The run order interleaves nothing else; each figure is the
median of --runs runs after one warm-up run.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = "/usr/bin/python3"


def log(msg):
    print(f"[cpu_suite {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def ensure_model(build, size, activation):
    tag = f"deco-{size}-bf16-a{int(round(activation * 100)):02d}"
    path = os.path.join(build, "models", tag)
    if not os.path.exists(os.path.join(path, "model.safetensors")):
        log(f"generating {tag}")
        subprocess.run([PY, os.path.join(ROOT, "tools", "gen_tiny_model.py"), "--out", path, "--variant", "deco",
                        "--size", size, "--seed", "1", "--dtype", "bf16", "--target-activation", str(activation)],
                       check=True)
    report = os.path.join(path, "generation_report.json")
    realised = None
    if os.path.exists(report):
        with open(report) as f:
            r = json.load(f)
        realised = round(r["held_out"]["mean_ratio"], 4)  # the generator's held-out measurement
    return path, realised


def decode_bench(build, model, threads, runs, **kw):
    cmd = [os.path.join(build, "bench", "decode_bench"), f"--model={model}", f"--threads={threads}",
           f"--runs={runs}", "--json"] + [f"--{k}={v}" for k, v in kw.items()]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    log(f"{os.path.basename(model)} {kw}: {result['tokens_per_s']:.2f} tok/s")
    return result


def torch_bench(model, threads, runs):
    cmd = [PY, os.path.join(ROOT, "bench", "torch_eager_bench.py"), "--model", model, "--threads", str(threads),
           "--runs", str(runs), "--dtype", "bf16", "--prompt-len", "1", "--new-tokens", "128"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    log(f"torch eager {os.path.basename(model)}: {result}")
    return result


def cpu_flags():
    flags = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    keep = sorted(f for f in flags if f.startswith(("avx", "fma", "f16c", "amx", "sse4")))
    model = ""
    try:
        model = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return model, keep


def paired_ratios(a, model, num_kw, den_kw, metric, pairs):
    """Ratios num/den of `metric` from `pairs` pairs of one-run decode_bench processes, the two
    alternating (den, num, den, num, ...), so that both halves of a pair meet the machine's
    bandwidth of the same minute; the median is robust to a pair that met a slow moment."""
    ratios = []
    for _ in range(pairs):
        den = decode_bench(a.build, model, a.threads, 1, **den_kw)
        num = decode_bench(a.build, model, a.threads, 1, **num_kw)
        ratios.append(metric(num) / metric(den))
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios), "ratios": ratios}


def run_size(a, size):
    model, realised = ensure_model(a.build, size, a.activation)
    r = {"model": model, "realised_activation": realised, "dtypes": {}, "batch": {}}
    for dtype in a.dtypes.split(","):
        r["dtypes"][dtype] = {
            "pp512": decode_bench(a.build, model, a.threads, a.runs, dtype=dtype, mode="pp", prompt_len=512),
            "tg128": decode_bench(a.build, model, a.threads, a.runs, dtype=dtype, mode="tg", prompt_len=1,
                                  new_tokens=128),
        }
    r["dense_tg128"] = decode_bench(a.build, model, a.threads, a.runs, dtype="bf16", mode="tg", prompt_len=1,
                                    new_tokens=128, dense_experts="true")
    r["dense_pp512"] = decode_bench(a.build, model, a.threads, a.runs, dtype="bf16", mode="pp", prompt_len=512,
                                    dense_experts="true")
    tg_bf16 = dict(dtype="bf16", mode="tg", prompt_len=1, new_tokens=128)
    r["moe_dense_over_sparse_pairs"] = paired_ratios(
        a, model, dict(tg_bf16, dense_experts="true"), tg_bf16, lambda x: x["moe_ms_per_step"], a.runs)
    if not a.skip_torch:
        r["torch_eager"] = torch_bench(model, a.threads, a.runs)
    if size in a.sweep_sizes.split(","):
        for b in [int(x) for x in a.batches.split(",")]:
            r["batch"][str(b)] = {
                "sparse": decode_bench(a.build, model, a.threads, a.runs, dtype="bf16", mode="tg", prompt_len=32,
                                       new_tokens=a.sweep_tokens, batch=b),
                "dense": decode_bench(a.build, model, a.threads, a.runs, dtype="bf16", mode="tg", prompt_len=32,
                                      new_tokens=a.sweep_tokens, batch=b, dense_experts="true"),
            }
        sweep = dict(dtype="bf16", mode="tg", prompt_len=32, new_tokens=a.sweep_tokens)
        r["batch16_over_batch1_pairs"] = paired_ratios(
            a, model, dict(sweep, batch=16), dict(sweep, batch=1), lambda x: x["tokens_per_s"], a.runs)
    return r


def moe_layer_bytes(model):
    """Bytes one MoE layer reads per token as the engine runs a bf16 model: (router + shared
    expert, per routed expert), from the checkpoint's first MoE layer (routers are kept in fp32,
    everything else in bf16)."""
    import struct
    with open(os.path.join(model, "model.safetensors"), "rb") as f:
        header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
    num_experts = json.load(open(os.path.join(model, "config.json")))["num_experts"]
    layer = None
    fixed = routed = 0
    for name, t in header.items():
        if "moe_router.weight" in name and layer is None:
            layer = name.split(".mlp.")[0] + ".mlp."
    for name, t in header.items():
        if layer is None or not name.startswith(layer) or len(t.get("shape", [])) != 2:
            continue
        elems = t["shape"][0] * t["shape"][1]
        if "moe_router" in name:
            fixed += 4 * elems
        elif "shared_experts" in name:
            fixed += 2 * elems
        elif "expert_" in name:
            routed += 2 * elems
    return fixed, routed / num_experts, num_experts


def sparsity_bar(model, union):
    """The sparse/dense bar at this run's own activation (union of active experts / E), and the
    ceiling that the bytes put on the MoE-layer ratio (dense bytes / sparse bytes)."""
    fixed, per_expert, num_experts = moe_layer_bytes(model)
    ratio = union / num_experts
    cap = (fixed + num_experts * per_expert) / (fixed + union * per_expert)
    return ratio, 0.8 / ratio, cap


def fmt_range(x):
    return f"{x['tokens_per_s']:.1f} ({x['tokens_per_s_min']:.1f}–{x['tokens_per_s_max']:.1f})"


def tables(results):
    lines = []
    for size, r in results["sizes"].items():
        lines.append(f"### DECO-{size} (realised activation ratio {r['realised_activation']})\n")
        lines.append("| dtype | pp512 tok/s | tg128 tok/s | MB read / token | bandwidth GB/s | roofline tok/s "
                     "| roofline fraction | MoE ms / step | fork/joins / step | join wait ms / step |")
        lines.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        rows = [(d, v["pp512"], v["tg128"]) for d, v in r["dtypes"].items()]
        rows.append(("bf16 `--dense_experts`", r["dense_pp512"], r["dense_tg128"]))
        for name, pp, tg in rows:
            lines.append(f"| {name} | {fmt_range(pp)} | {fmt_range(tg)} | {tg['bytes_per_token'] / 1e6:.1f} | "
                         f"{tg['bandwidth_gbs']:.2f} | {tg['roofline_tokens_per_s']:.1f} | "
                         f"{100 * tg['roofline_fraction']:.1f} % | {tg['moe_ms_per_step']:.3f} | "
                         f"{tg.get('parallel_regions_per_step', 0):.0f} | {tg.get('join_wait_ms_per_step', 0):.3f} |")
        bf, dn = r["dtypes"].get("bf16", {}).get("tg128"), r["dense_tg128"]
        if bf:
            moe = dn["moe_ms_per_step"] / bf["moe_ms_per_step"]
            e2e = bf["tokens_per_s"] / dn["tokens_per_s"]
            lines.append("")
            lines.append(f"Sparse vs dense (bf16, tg128): MoE layers {moe:.2f}× faster, end to end {e2e:.2f}×; "
                         f"expert union per MoE layer and step {bf['expert_union_per_layer']:.2f} sparse.")
            ratio, bar, cap = sparsity_bar(r["model"], bf["expert_union_per_layer"])
            lines.append(f"Activation in this run {ratio:.3f} (union / experts): bar 0.8 / {ratio:.3f} = {bar:.2f}×; "
                         f"the bytes allow at most {cap:.2f}× (router and shared expert read either way); "
                         f"MoE sparse/dense reaches {100 * moe / cap:.1f} % of that ceiling.")
            pairs = r.get("moe_dense_over_sparse_pairs")
            if pairs:
                lines.append(f"Interleaved ({len(pairs['ratios'])} pairs of one-run processes, sparse and dense "
                             f"alternating): MoE layers {pairs['median']:.2f}× faster (pairs "
                             f"{pairs['min']:.2f}–{pairs['max']:.2f}), **{100 * pairs['median'] / cap:.1f} %** of "
                             f"the ceiling.")
            if "torch_eager" in r:
                t = r["torch_eager"]
                tps = t.get("decode_tokens_per_s", t.get("tokens_per_s"))
                lines.append(f"PyTorch eager (bf16, batch 1, KV cache): {tps:.2f} tok/s → moeserve "
                             f"{bf['tokens_per_s'] / tps:.2f}×.")
        pp = r["dtypes"].get("bf16", {}).get("pp512")
        if pp and results.get("bf16_peak_gmacs"):
            gmacs = pp["tokens_per_s"] * macs_per_prompt_token(r["model"]) / 1e9
            lines.append(f"pp512 bf16: {gmacs:.0f} GMAC/s in the matmuls (attention core not counted), "
                         f"{100 * gmacs / results['bf16_peak_gmacs']:.1f} % of the bf16 peak given "
                         f"({results['bf16_peak_gmacs']:.0f} GMAC/s).")
        if r["batch"]:
            lines.append("")
            lines.append("| batch | sparse tok/s | × batch 1 | expert union / layer / step | dense tok/s | "
                         "sparse / dense |")
            lines.append("| --- | --- | --- | --- | --- | --- |")
            base = r["batch"]["1"]["sparse"]["tokens_per_s"] if "1" in r["batch"] else None
            for b, v in r["batch"].items():
                s, d = v["sparse"], v["dense"]
                ratio = f"{s['tokens_per_s'] / base:.2f}×" if base else "-"
                lines.append(f"| {b} | {fmt_range(s)} | {ratio} | {s['expert_union_per_layer']:.2f} | "
                             f"{fmt_range(d)} | {s['tokens_per_s'] / d['tokens_per_s']:.2f}× |")
            pairs = r.get("batch16_over_batch1_pairs")
            if pairs:
                lines.append("")
                lines.append(f"Interleaved ({len(pairs['ratios'])} pairs of one-run processes, batch 1 and batch 16 "
                             f"alternating): batch 16 / batch 1 = **{pairs['median']:.2f}×** (pairs "
                             f"{pairs['min']:.2f}–{pairs['max']:.2f}).")
        lines.append("")
    return "\n".join(lines)


def macs_per_prompt_token(model):
    """Multiply-adds per prompt token in the matmuls a bf16 prefill runs (attention
    projections, dense FFNs, shared experts, the router and the routed experts at the checkpoint's
    generation-time activation); the LM head runs for the last token only and is left out."""
    import struct
    with open(os.path.join(model, "model.safetensors"), "rb") as f:
        header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
    routed_share = 0.2
    report = os.path.join(model, "generation_report.json")
    if os.path.exists(report):
        routed_share = json.load(open(report))["held_out"]["mean_ratio"]
    macs = 0.0
    for name, t in header.items():
        shape = t.get("shape", [])
        if len(shape) != 2 or not name.startswith("model.layers."):
            continue
        elems = shape[0] * shape[1]
        macs += elems * (routed_share if ".experts" in name or "expert_" in name else 1.0)
    return macs


def plot(results, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib missing (scripts/setup.sh installs python3-matplotlib); no plot")
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for size, r in results["sizes"].items():
        if not r["batch"]:
            continue
        bs = [int(b) for b in r["batch"]]
        for kind, style in (("sparse", "-o"), ("dense", "--s")):
            ax.plot(bs, [r["batch"][str(b)][kind]["tokens_per_s"] for b in bs], style, label=f"DECO-{size} {kind}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch (sequences decoded together)")
    ax.set_ylabel("aggregate decode tokens/s")
    ax.set_title(f"moeserve CPU, bf16, {results['threads']} threads")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    log(f"wrote {path}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--sizes", default="0.1B,0.5B")
    ap.add_argument("--sweep-sizes", default="0.1B", help="sizes that get the batch sweep")
    ap.add_argument("--dtypes", default="f32,bf16,int8")
    ap.add_argument("--batches", default="1,4,16,64")
    ap.add_argument("--sweep-tokens", type=int, default=64, help="decoded tokens per sequence in the sweep")
    ap.add_argument("--activation", type=float, default=0.2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--bf16-peak-gmacs", type=float, default=0.0,
                    help="the machine's bf16 peak for all threads (e.g. 2 threads x 2 vdpbf16ps x 32 MACs x GHz)")
    ap.add_argument("--out-dir", default=os.path.join(ROOT, "bench", "results"))
    a = ap.parse_args()
    cpu, flags = cpu_flags()
    results = {"date": time.strftime("%Y-%m-%d %H:%M"), "cpu": cpu, "cpu_flags": flags, "nproc": os.cpu_count(),
               "threads": a.threads, "runs": a.runs, "machine": platform.machine(),
               "command": " ".join(sys.argv), "bf16_peak_gmacs": a.bf16_peak_gmacs, "sizes": {}}
    os.makedirs(a.out_dir, exist_ok=True)
    for size in a.sizes.split(","):
        results["sizes"][size] = run_size(a, size)
        with open(os.path.join(a.out_dir, "cpu_suite.json"), "w") as f:  # after each size
            json.dump(results, f, indent=1)
    md = tables(results)
    with open(os.path.join(a.out_dir, "cpu_suite.md"), "w") as f:
        f.write(f"CPU: {cpu}, {os.cpu_count()} vCPUs, flags {' '.join(flags)}; {a.threads} threads, "
                f"median of {a.runs}; {results['date']}\n\n{md}")
    plot(results, os.path.join(a.out_dir, "cpu_batch_sweep.png"))
    print(md)


if __name__ == "__main__":
    main()
