#!/usr/bin/python3
"""How fast the union of routed experts grows when a step verifies k draft tokens (speculative
decoding on a sparse MoE; the question BlockFFN's authors raised): a verification step of k + 1
consecutive tokens reads the union of their active experts, so speculation pays on DECO only if
that union grows slower than k + 1 separate decode steps' reads.

Routes held-out text of the tools/train corpus through a model with `moeserve-run
--dump-routing` (the trained DECO by default: its router learned to be sparse, unlike a random
one) and reports, for windows of k + 1 consecutive tokens, the mean union of active experts per
MoE layer as a fraction of the experts, against one token's and against what k + 1 independent
tokens with the same per-token activation would give (1 - (1 - r)^(k+1)).

    /usr/bin/python3 bench/spec_union.py [--model models/deco-demo] [--docs 40] [--max-k 8]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "tools", "train"))
import corpus  # noqa: E402


def route(run, model, text, path):
    done = subprocess.run([run, "--model", model, "--prompt", text, "--max_new_tokens", "0", "--dump_routing", path,
                           "--quiet"], capture_output=True, text=True)
    if done.returncode != 0:  # e.g. longer than the model's context
        print(f"skipped a document: {done.stderr.strip()}", file=sys.stderr)
        return []
    with open(path) as f:
        return [layer for layer in json.load(f)["layers"] if layer["kind"] == "moe"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "deco-demo"))
    ap.add_argument("--run", default=os.path.join(ROOT, "build", "tools", "moeserve-run"))
    ap.add_argument("--docs", type=int, default=40, help="held-out documents routed")
    ap.add_argument("--max-k", type=int, default=8)
    a = ap.parse_args()
    _, test = corpus.split()
    docs = [t for t in test if 200 <= len(t) <= 450][: a.docs]
    union = {k: [0.0, 0] for k in range(a.max_k + 1)}  # sum of union fractions, windows
    single = [0.0, 0]
    with tempfile.TemporaryDirectory() as tmp:
        for i, text in enumerate(docs):
            for layer in route(a.run, a.model, text, os.path.join(tmp, f"r{i}.json")):
                E = layer["num_experts"]
                sets = [set(s) for s in layer["active_experts"]]
                for s in sets:
                    single[0] += len(s) / E
                    single[1] += 1
                for k in range(a.max_k + 1):
                    for t in range(len(sets) - k):
                        union[k][0] += len(set().union(*sets[t:t + k + 1])) / E
                        union[k][1] += 1
    r = single[0] / single[1]
    print(f"model {a.model}: {len(docs)} held-out documents, {single[1]} (token, MoE layer) routings, "
          f"mean activation r = {r:.3f}")
    print("| draft k | tokens verified | union / experts | x one token | independent tokens would read |")
    print("| --- | --- | --- | --- | --- |")
    for k in range(a.max_k + 1):
        u = union[k][0] / union[k][1]
        print(f"| {k} | {k + 1} | {u:.3f} | {u / r:.2f} | {1 - (1 - r) ** (k + 1):.3f} |")


if __name__ == "__main__":
    main()
