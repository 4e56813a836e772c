#!/usr/bin/python3
"""One end-to-end engine test case (called from CTest).

  run_case.py --engine PATH --workdir DIR --variant V [--set k=v ...] [--gen-dtype f32|bf16|f16]
              [--engine-dtype f32|bf16|f16|int8] [--shards K] [--seed N] [--tokens N] [--tied]
              [--check-chunks 1,3,7] [--check-dense] [--check-threads 1,3] [--gen-arg=--eta-tensor ...]
              [--check-budget min_weight=0.05|k_scale=0.5|max_experts=1]

Generates a tiny checkpoint, picks deterministic random token ids (BOS 1 first), runs the
numpy reference (deco_reference.py, or softmoe_reference.py for --variant softmoe) and the
engine CLI
  ENGINE --model DIR --token-ids ... --max-new-tokens 0 --dtype D --dump-logits F --dump-routing F
         [--prefill-chunk N] [--dense-experts]
and compares them (compare.py; fp32 bounds for an f32 engine — bf16/f16 weights upcast
exactly — and bf16 bounds for a bf16 engine). Each --check-chunks value and --check-dense
is compared engine-vs-engine against the plain run (tight bounds unless --e2e-mode bf16).
Each --check-threads count runs the engine on that many threads: logits and routing must equal
the plain run's bit for bit.
--check-budget runs the engine with the default budget spelled out (must be bit-identical to
the plain run) and with the given budget (the realised active counts must drop: every token at
most its exact count, fewer in total, and the knob's own bound holds on every token).
Exit 0 only if everything passes.
"""
import json
import argparse
import os
import shutil
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tools", "py"))
sys.path.insert(0, HERE)
import compare as cmp  # noqa: E402
import safetensors_io as st  # noqa: E402

PY = sys.executable


def run(cmd, what, timeout):
    print(f"[run_case] {what}: {' '.join(cmd)}", flush=True)
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"[run_case] FAIL: {what} timed out after {timeout}s")
        return False
    if r.returncode != 0:
        print(f"[run_case] FAIL: {what} exited {r.returncode}\n"
              f"{r.stdout[-3000:]}{r.stderr[-3000:]}")
        return False
    return True


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--engine", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--variant", default="deco")
    ap.add_argument("--size", default="tiny")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--gen-dtype", default="f32", choices=["f32", "bf16", "f16"])
    ap.add_argument("--engine-dtype", default="f32", choices=["f32", "bf16", "f16", "int8"])
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tokens", type=int, default=20, help="prompt length incl. BOS")
    ap.add_argument("--tied", action="store_true")
    ap.add_argument("--check-chunks", default="", help="e.g. 1,3,7")
    ap.add_argument("--check-dense", action="store_true")
    ap.add_argument("--check-threads", default="",
                    help="e.g. 1,3: the engine on that many threads gives the same bits (logits and routing)")
    ap.add_argument("--timeout", type=int, default=300)
    ap.add_argument("--max-pair-diff", type=float, default=0.01, help="see compare.py")
    ap.add_argument("--gen-arg", action="append", default=[],
                    help="extra generator argument, e.g. --gen-arg=--eta-tensor")
    ap.add_argument("--check-budget", default="", metavar="KNOB=VALUE",
                    help="min_weight=X, k_scale=X or max_experts=N")
    ap.add_argument("--e2e-mode", default="fp32", choices=["fp32", "bf16"],
                    help="bounds for engine-vs-engine checks (fp32: max|d| <= 1e-4 and identical "
                         "routing, also for a bf16 engine whose activations are fp32)")
    a = ap.parse_args(argv)

    wd = os.path.abspath(a.workdir)
    model = os.path.join(wd, "model")
    shutil.rmtree(model, ignore_errors=True)
    os.makedirs(model)
    gen = [PY, os.path.join(ROOT, "tools", "gen_tiny_model.py"), "--out", model,
           "--variant", a.variant, "--size", a.size, "--seed", str(a.seed),
           "--dtype", a.gen_dtype, "--shards", str(a.shards)]
    gen += sum((["--set", s] for s in a.set), []) + (["--tied"] if a.tied else []) + a.gen_arg
    if not run(gen, "generate", a.timeout):
        return 1

    V = st.read_model_headers(model)["model.embed_tokens.weight"][2][0]
    rng = np.random.default_rng(a.seed + 1000)
    ids = [1] + [int(t) for t in rng.integers(3, V, max(a.tokens, 1) - 1)]
    tok = ",".join(map(str, ids))
    out = lambda name: os.path.join(wd, name)  # noqa: E731

    reference = "softmoe_reference.py" if a.variant == "softmoe" else "deco_reference.py"
    if not run([PY, os.path.join(HERE, reference), "--model", model, "--token-ids", tok,
                "--dump-logits", out("ref.f32"), "--dump-routing", out("ref.json")],
               "reference", a.timeout):
        return 1

    def engine(tag, extra):
        cmd = [a.engine, "--model", model, "--token-ids", tok, "--max-new-tokens", "0",
               "--dtype", a.engine_dtype, "--dump-logits", out(f"{tag}.f32"),
               "--dump-routing", out(f"{tag}.json")] + extra
        return run(cmd, f"engine[{tag}]", a.timeout)

    # f16 weights hold more mantissa than bf16, so the bf16 bounds apply to them as well.
    mode = {"f32": "fp32", "bf16": "bf16", "f16": "bf16", "int8": "int8"}[a.engine_dtype]
    ok = True

    def check(what, *args, mode=mode, **kw):
        good, line, fails = cmp.compare(*args, vocab=V, mode=mode, max_pair_diff=a.max_pair_diff,
                                        **kw)
        print(f"[run_case] {what}: {line}")
        for f in fails:
            print(f"[run_case]   FAIL: {f}")
        return good

    if not engine("eng", []):
        return 1
    ok &= check("reference vs engine", out("ref.f32"), out("ref.json"), out("eng.f32"),
                out("eng.json"))
    variants = [(f"chunk{n}", ["--prefill-chunk", n]) for n in a.check_chunks.split(",") if n]
    if a.check_dense:
        variants.append(("dense", ["--dense-experts"]))
    for tag, extra in variants:
        if not engine(tag, extra):
            ok = False
            continue
        ok &= check(f"engine vs engine[{tag}]", out("eng.f32"), out("eng.json"), out(f"{tag}.f32"),
                    out(f"{tag}.json"), e2e=True, margins=out("ref.json"), mode=a.e2e_mode)
    for n in [n for n in a.check_threads.split(",") if n]:
        # Thread counts change how work is split (by rows, by KV head, projections fused with
        # attention or not), never what a row or a head computes: the same bits.
        if not engine(f"threads{n}", ["--threads", n]):
            ok = False
            continue
        same = (open(out("eng.f32"), "rb").read() == open(out(f"threads{n}.f32"), "rb").read()
                and json.load(open(out("eng.json"))) == json.load(open(out(f"threads{n}.json"))))
        print(f"[run_case] engine == engine[--threads {n}] (bitwise logits and routing): {same}")
        ok &= same
    if a.check_budget:
        ok &= check_budget(a.check_budget, engine, out)
    print(f"[run_case] {a.variant} sets={a.set} gen={a.gen_dtype} engine={a.engine_dtype} "
          f"shards={a.shards}{' tied' if a.tied else ''} T={len(ids)}: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


def check_budget(spec, engine, out):
    """Default budget == exact bit for bit; the given budget lowers the realised active counts."""
    knob, _, value = spec.partition("=")
    flag = {"min_weight": "--budget-min-weight", "k_scale": "--budget-k-scale",
            "max_experts": "--budget-max-experts"}.get(knob)
    if flag is None or not value:
        print(f"[run_case] FAIL: --check-budget {spec!r}: want min_weight=X, k_scale=X or max_experts=N")
        return False
    if not engine("budget_default", ["--budget-min-weight", "0", "--budget-k-scale", "1",
                                     "--budget-max-experts", "0"]):
        return False
    ok = True
    same = (open(out("eng.f32"), "rb").read() == open(out("budget_default.f32"), "rb").read()
            and json.load(open(out("eng.json"))) == json.load(open(out("budget_default.json"))))
    print(f"[run_case] default budget == exact (bitwise logits and routing): {same}")
    ok &= same
    if not engine("budget", [flag, value]):
        return False
    exact = {l["layer"]: l for l in json.load(open(out("eng.json")))["layers"] if l["kind"] == "moe"}
    got = {l["layer"]: l for l in json.load(open(out("budget.json")))["layers"] if l["kind"] == "moe"}
    total_exact = total_got = 0
    for i, le in exact.items():
        ce = [len(s) for s in le["active_experts"]]
        cg = [len(s) for s in got[i]["active_experts"]]
        total_exact, total_got = total_exact + sum(ce), total_got + sum(cg)
        # Per-token bounds: a threshold or a cap never adds an expert to a token. k_scale is
        # not monotone per token (p and θ0 = c·k/n both move with k; the cap ⌈γ·k⌉ is what
        # bounds a token), so only the total is held to it.
        if knob != "k_scale":
            bad = [t for t, (x, y) in enumerate(zip(ce, cg)) if y > x]
            if bad:
                print(f"[run_case] FAIL: layer {i}: budget raised the active count of tokens {bad[:5]}")
                ok = False
        if knob == "max_experts" and max(cg) > int(value):
            print(f"[run_case] FAIL: layer {i}: {max(cg)} experts active with max_experts={value}")
            ok = False
        if knob == "min_weight":
            small = [w for ws in got[i]["weights"] for w in ws if abs(w) < float(value)]
            if small:
                print(f"[run_case] FAIL: layer {i}: weights below min_weight kept: {small[:5]}")
                ok = False
        print(f"[run_case] budget {spec}: layer {i} mean active {sum(ce) / len(ce):.3f} -> "
              f"{sum(cg) / len(cg):.3f}")
    if not total_got < total_exact:
        print(f"[run_case] FAIL: budget {spec} did not lower the active count ({total_exact} -> {total_got})")
        ok = False
    return ok


if __name__ == "__main__":
    sys.exit(main())
