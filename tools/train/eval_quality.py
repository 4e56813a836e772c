#!/usr/bin/python3
"""Held-out quality of a demo checkpoint, from torch and from the C++ engine, and the quality
trade of the serve-time expert budget and of the compute dtype.

  /usr/bin/python3 tools/train/eval_quality.py --engine build/tools/run/moeserve-run \
      --model models/deco-demo [--windows 50] [--json out.json]

Perplexity = exp(mean NLL per predicted token) over the held-out documents (the corpus split
of corpus.py) as one stream `BOS doc EOS BOS doc EOS ...`, cut into consecutive windows of the
model's context (256): every token after the first of a window is predicted once. Windows, not
one engine process per document, because each moeserve-run start costs ~0.5 s. The engine
scores a window with --max-new-tokens 0 --dump-logits; activation is the engine's own count of
active experts per token (stderr) over the same positions.
Rows: torch (fp32 compute on the stored weights), the engine at f32 / bf16 / int8, and the
engine with expert budgets (DECO: --budget-min-weight, SoftMoE: --budget-k-scale).
"""
import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import checkpoint  # noqa: E402
import corpus  # noqa: E402
import tokenizer  # noqa: E402

ACTIVE_RE = re.compile(r"mean active experts per MoE layer: ([0-9. ]+)")


def held_out_docs(model_dir, n_docs, ctx):
    """The first n_docs (0 = all) held-out documents as BOS doc EOS, at most ctx + 1 tokens."""
    _, test = corpus.split()
    ids = tokenizer.encode(os.path.join(model_dir, "tokenizer.model"), test[:n_docs] if n_docs
                           else test)
    return [([1] + d + [2])[:ctx + 1] for d in ids]


def held_out_windows(model_dir, ctx, n_windows=0):
    """The held-out stream cut into windows of ctx + 1 tokens (the last one shared with the
    next window as its first input); the first n_windows of them (0 = all)."""
    _, test = corpus.split()
    s = []
    for d in tokenizer.encode(os.path.join(model_dir, "tokenizer.model"), test):
        s += [1] + d + [2]
    wins = [s[i:i + ctx + 1] for i in range(0, len(s) - 1, ctx)]
    return wins[:n_windows] if n_windows else wins


def nll_rows(logits, seq):
    return F.cross_entropy(torch.as_tensor(logits, dtype=torch.float64),
                           torch.as_tensor(seq[1:]), reduction="sum").item()


@torch.no_grad()
def torch_eval(model, seqs):
    """-> (mean nll, mean active experts per MoE layer), like engine_eval."""
    nll = n = 0
    active = 0
    for d in seqs:
        logits, counts = model(torch.tensor(d[:-1])[None], collect=True)
        nll += nll_rows(logits[0].double(), d)
        n += len(d) - 1
        active = active + np.array([c[0].item() for c in counts])
    return nll / n, active / n


def engine_eval(engine, model_dir, seqs, V, extra, threads):
    """-> (mean nll, mean active experts per MoE layer over all scored positions)."""
    nll = n = 0
    active = None
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "logits.f32")
        for d in seqs:
            cmd = [engine, "--model", model_dir, "--token-ids", ",".join(map(str, d[:-1])),
                   "--max-new-tokens", "0", "--dump-logits", out, "--threads", str(threads),
                   "--quiet"] + extra
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                sys.exit(f"eval_quality: engine failed: {' '.join(cmd)}\n{r.stderr[-2000:]}")
            logits = np.fromfile(out, dtype="<f4").reshape(-1, V)
            nll += nll_rows(logits, d)
            n += len(d) - 1
            a = np.array([float(v) for v in ACTIVE_RE.search(r.stderr).group(1).split()])
            active = a * (len(d) - 1) if active is None else active + a * (len(d) - 1)
    return nll / n, active / n


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--windows", type=int, default=0, help="first N context windows (0 = all)")
    ap.add_argument("--dtypes", default="f32,bf16,int8")
    ap.add_argument("--budgets", default=None,
                    help="comma list; DECO min_weight (default 0.02,0.05,0.1,0.2), "
                         "SoftMoE k_scale (default 0.75,0.5)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="also write the rows here")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)

    model, cfg, kind = checkpoint.load(a.model)
    V = model.lm_head.weight.shape[0]
    E = cfg["num_experts"]
    seqs = held_out_windows(a.model, cfg["max_position_embeddings"], a.windows)
    tokens = sum(len(d) - 1 for d in seqs)
    rows = []

    def add(label, nll, active=None):
        row = dict(setting=label, nll=round(nll, 4), perplexity=round(math.exp(nll), 3))
        if active is not None:
            row["active_per_layer"] = [round(float(x), 3) for x in active]
            row["activation_ratio" if kind == "deco" else "mean_active_experts"] = round(
                float(np.mean(active) / (E if kind == "deco" else 1)), 4)
        rows.append(row)
        print(json.dumps(row), flush=True)

    add("torch fp32 (stored weights)", *torch_eval(model, seqs))
    for dt in a.dtypes.split(","):
        add(f"engine {dt}", *engine_eval(a.engine, a.model, seqs, V, ["--dtype", dt], a.threads))
    flag, default = (("--budget-min-weight", "0.02,0.05,0.1,0.2") if kind == "deco"
                     else ("--budget-k-scale", "0.75,0.5"))
    for b in (a.budgets or default).split(","):
        add(f"engine f32 {flag[2:]}={b}",
            *engine_eval(a.engine, a.model, seqs, V, ["--dtype", "f32", flag, b], a.threads))

    print(f"\n{kind} {a.model}: {len(seqs)} held-out windows, {tokens} scored tokens\n")
    unit = "activation" if kind == "deco" else "mean active experts"
    print(f"| setting | perplexity | {unit} | per layer |\n|---|---|---|---|")
    for r in rows:
        v = r.get("activation_ratio", r.get("mean_active_experts", ""))
        pl = " ".join(f"{x:.2f}" for x in r.get("active_per_layer", []))
        print(f"| {r['setting']} | {r['perplexity']:.2f} | {v} | {pl} |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(model=a.model, kind=kind, windows=len(seqs), tokens=tokens, rows=rows),
                      f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
