#!/usr/bin/python3
"""Expert budget sweep: decode speed, logit deviation and perplexity against the exact model.

  bench/budget_sweep.py --engine build/tools/moeserve-run --workdir /tmp/budget [--runs 5]

Generates two checkpoints with tools/gen_tiny_model.py (bf16, trained SentencePiece tokenizer):
  deco     DECO at the 0.1B shape with 4 layers (layer 0 dense, 42 experts of width 64)
  softmoe  SoftMoE at the 0.1B trunk with 4 layers (32 GELU experts of width 768, k_l 1.2..2.4)
then, for each budget of the sweep (engine/expert_budget.h: --budget-min-weight for DECO,
--budget-k-scale for SoftMoE):
  - held-out text: docs/architecture.md encoded with the model's tokenizer (spm_encode), BOS
    prepended, the first --ppl-tokens tokens; one prefill with --dump-logits gives the
    perplexity of the next-token predictions and mean |Δlogit| against the exact run (same text);
  - decode speed: the first 32 tokens as prompt, --decode-tokens greedy tokens with
    --ignore-eos, the median of --runs runs of moeserve-run's "generated ... tok/s" figure
    (runs interleaved round-robin over the budgets);
  - realised mean active experts per MoE layer (moeserve-run's summary line, decode run).
The weights are random, so absolute perplexities are near the vocabulary size; what the sweep
measures is how far each budget moves the model from its exact output, and what it saves.
Writes DIR/results.json and prints a Markdown table.
"""
import argparse
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, ".."))
PY = sys.executable

MODELS = {
    "deco": dict(args=["--variant", "deco", "--size", "0.1B", "--set", "num_layers=4"],
                 flag="--budget-min-weight", values=[0, 0.01, 0.02, 0.03, 0.05, 0.08]),
    "softmoe": dict(args=["--variant", "softmoe", "--size", "0.1B", "--set", "num_layers=4"],
                    flag="--budget-k-scale", values=[1, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4]),
}


def sh(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        sys.exit(f"budget_sweep: {' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    return r


def generate(name, workdir, seed, vocab):
    """vocab None: train the tokenizer (its piece count is the vocab); else no tokenizer, the
    given vocab (the weights depend only on seed, names and shapes, so they are the same)."""
    out = os.path.join(workdir, name)
    if not os.path.exists(os.path.join(out, "model.safetensors")):
        tok = ["--tokenizer", "train"] if vocab is None else ["--vocab", str(vocab)]
        sh([PY, os.path.join(ROOT, "tools", "gen_tiny_model.py"), "--out", out, "--seed", str(seed),
            "--dtype", "bf16", *tok, *MODELS[name]["args"]])
    return out


def encode(model_dir, text_path, limit, ids_file):
    if ids_file:  # pre-encoded (a machine without spm_encode)
        return [int(t) for t in open(ids_file).read().split()][:limit]
    r = sh(["spm_encode", f"--model={os.path.join(model_dir, 'tokenizer.model')}", "--output_format=id",
            f"--input={text_path}"])
    ids = [1] + [int(t) for t in r.stdout.split()]
    return ids[:limit]


def parse_summary(stderr):
    m = re.search(r"prompt (\d+) tokens in ([\d.]+)s \(([\d.]+) tok/s\) \| generated (\d+) tokens in ([\d.]+)s "
                  r"\(([\d.]+) tok/s\)", stderr)
    a = re.search(r"mean active experts per MoE layer: ([\d. ]+)", stderr)
    if not m:
        sys.exit(f"budget_sweep: no timing line in:\n{stderr[-2000:]}")
    active = [float(v) for v in a.group(1).split()] if a else []
    return dict(prefill_tps=float(m.group(3)), decode_tps=float(m.group(6)), active=active)


def logits_run(engine, model, ids, flag, value, path, threads):
    r = sh([engine, "--model", model, "--token-ids", ",".join(map(str, ids)), "--max-new-tokens", "0",
            "--dtype", "bf16", "--threads", str(threads), "--dump-logits", path, flag, str(value)])
    s = parse_summary(r.stderr)
    return s


def log_softmax(x):
    x = x.astype(np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def kl(exact, got):
    """Mean over positions of KL(exact || got) of the next-token distributions, in nats."""
    p, q = log_softmax(exact), log_softmax(got)
    return float((np.exp(p) * (p - q)).sum(-1).mean())


def perplexity(logits, ids):
    x = logits[:-1].astype(np.float64)
    x = x - x.max(-1, keepdims=True)
    logp = x - np.log(np.exp(x).sum(-1, keepdims=True))
    nll = -logp[np.arange(len(ids) - 1), np.asarray(ids[1:])]
    return float(math.exp(nll.mean()))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--engine", default=os.path.join(ROOT, "build", "tools", "moeserve-run"))
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--text", default=os.path.join(ROOT, "docs", "architecture.md"))
    ap.add_argument("--ppl-tokens", type=int, default=1024)
    ap.add_argument("--decode-tokens", type=int, default=256)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--models", default="deco,softmoe")
    ap.add_argument("--vocab", type=int, help="generate without a tokenizer, with this vocab (then --ids-dir)")
    ap.add_argument("--ids-dir", help="held-out token ids per model, DIR/<model>_ids.txt (BOS included)")
    a = ap.parse_args(argv)
    os.makedirs(a.workdir, exist_ok=True)
    cpu = platform.machine()
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    results = dict(machine=f"{platform.node()}: {cpu}, {os.cpu_count()} CPUs, --threads {a.threads}",
                   command=" ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:]), models={})
    rows = []
    for name in a.models.split(","):
        spec = MODELS[name]
        model = generate(name, a.workdir, a.seed, a.vocab)
        ids = encode(model, a.text, a.ppl_tokens, a.ids_dir and os.path.join(a.ids_dir, f"{name}_ids.txt"))
        prompt = ids[:32]
        exact_path = os.path.join(a.workdir, f"{name}_exact.f32")
        entries = []
        exact = None
        # Decode timings round-robin over the budgets (run r of every budget, then run r + 1),
        # so that drifting machine load affects every budget alike.
        decodes = {value: [] for value in spec["values"]}
        for _ in range(a.runs):
            for value in spec["values"]:
                r = sh([a.engine, "--model", model, "--token-ids", ",".join(map(str, prompt)), "--max-new-tokens",
                        str(a.decode_tokens), "--ignore-eos", "--quiet", "--dtype", "bf16", "--threads",
                        str(a.threads), spec["flag"], str(value)])
                decodes[value].append(parse_summary(r.stderr))
        for value in spec["values"]:
            path = os.path.join(a.workdir, f"{name}_{value}.f32")
            prefill = logits_run(a.engine, model, ids, spec["flag"], value, path, a.threads)
            logits = np.fromfile(path, dtype="<f4").reshape(len(ids), -1)
            if exact is None:
                exact = logits
                os.replace(path, exact_path)
            decode = decodes[value]
            tps = [d["decode_tps"] for d in decode]
            e = dict(budget=f"{spec['flag']}={value}", value=value,
                     decode_tps_median=statistics.median(tps), decode_tps_min=min(tps), decode_tps_max=max(tps),
                     prefill_tps=prefill["prefill_tps"], mean_active_decode=decode[0]["active"],
                     mean_active_text=prefill["active"],
                     mean_abs_dlogit=float(np.abs(logits - exact).mean()),
                     max_abs_dlogit=float(np.abs(logits - exact).max()),
                     argmax_agree=float((logits.argmax(-1) == exact.argmax(-1)).mean()),
                     kl_exact=kl(exact, logits),
                     ppl=perplexity(logits, ids))
            entries.append(e)
            print(f"[budget_sweep] {name} {e['budget']}: decode {e['decode_tps_median']:.2f} tok/s, "
                  f"active {e['mean_active_text']}, mean|dlogit| {e['mean_abs_dlogit']:.4f}, ppl {e['ppl']:.2f}",
                  flush=True)
        results["models"][name] = dict(tokens=len(ids), vocab=int(exact.shape[1]), entries=entries)
        base = entries[0]
        for e in entries:
            act = sum(e["mean_active_text"]) / max(1, len(e["mean_active_text"]))
            rows.append(f"| {name} | `{e['budget']}` | {e['decode_tps_median']:.2f} "
                        f"({e['decode_tps_min']:.2f}–{e['decode_tps_max']:.2f}) | "
                        f"{e['decode_tps_median'] / base['decode_tps_median']:.2f}× | {act:.2f} | "
                        f"{e['mean_abs_dlogit']:.4f} | {e['kl_exact']:.4f} | {e['argmax_agree']:.3f} | {e['ppl']:.2f} "
                        f"({e['ppl'] / base['ppl']:.3f}×) |")
    with open(os.path.join(a.workdir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(f"\nmachine: {results['machine']}")
    print("\n| model | budget | decode tok/s (median, min–max) | speed vs exact | mean active experts / MoE layer "
          "(held-out text) | mean \\|Δlogit\\| vs exact | KL(exact ‖ budget), nats | argmax agreement | "
          "perplexity (vs exact) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
