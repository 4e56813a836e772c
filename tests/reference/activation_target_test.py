#!/usr/bin/python3
"""gen_tiny_model.py --target-activation R, measured by the ENGINE (called from CTest).

  activation_target_test.py --engine build/tools/moeserve-run --workdir DIR

For each case: generate a checkpoint with --target-activation R, run moeserve-run
--dump-routing on held-out prompts (BOS + ids from an RNG stream the generator does not use,
so no calibration sequence is among them), and require the realised activation ratio
(spec deco.md §5: Σ|A| / (tokens·E), averaged over the MoE layers) to be within TOL of R.
Also: without the flag a random DECO model activates about half of its experts (asserted
|ratio - 0.5| <= 0.1, i.e. far from 0.2); the calibrated checkpoint keeps the export layout
(config.json byte-identical to the uncalibrated one, same tensor names / shapes / dtypes);
generation is deterministic; generation_report.json agrees with the engine; the flag is
refused for routers without a ReLU activity (top-k, TopP, dense, SoftMoE).
The reference-vs-engine logit comparison of calibrated checkpoints is in CMakeLists.txt
(reference_case ... --gen-arg=--target-activation=...).
Exit 0 only if everything passes.
"""
import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tools", "py"))
import safetensors_io as st  # noqa: E402

GEN = os.path.join(ROOT, "tools", "gen_tiny_model.py")
PY = sys.executable
TOL = 0.05  # |engine ratio - R| on the held-out prompts
PROMPTS, PROMPT_LEN = 4, 128  # held-out: 512 tokens per case

failed = []


def check(name, cond, detail=""):
    print(f"[activation_target] {'ok  ' if cond else 'FAIL'} {name}{(': ' + detail) if detail else ''}",
          flush=True)
    if not cond:
        failed.append(name)
    return cond


def gen(out, *args, expect_ok=True):
    shutil.rmtree(out, ignore_errors=True)
    r = subprocess.run([PY, GEN, "--out", out, *args], capture_output=True, text=True, timeout=300)
    if expect_ok and r.returncode != 0:
        raise SystemExit(f"[activation_target] FAIL: generator {' '.join(args)} exited "
                         f"{r.returncode}\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    return r


def prompts(vocab, seed):
    rng = np.random.default_rng([seed, 0xA11CE])  # not a stream the generator draws from
    ids = rng.integers(3, vocab, size=(PROMPTS, PROMPT_LEN))
    ids[:, 0] = 1
    return ids


def engine_ratio(engine, model, workdir, ids, dtype):
    """Mean over MoE layers of Σ_tokens |A| / (tokens · E) over all prompts, from --dump-routing;
    -> (mean, {layer: ratio})."""
    active, tokens = {}, {}
    for j, seq in enumerate(ids):
        dump = os.path.join(workdir, f"routing{j}.json")
        cmd = [engine, "--model", model, "--token-ids", ",".join(map(str, seq)),
               "--max-new-tokens", "0", "--dtype", dtype, "--dump-routing", dump]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            raise SystemExit(f"[activation_target] FAIL: engine exited {r.returncode}: "
                             f"{' '.join(cmd)}\n{r.stderr[-2000:]}")
        for layer in json.load(open(dump))["layers"]:
            if layer["kind"] != "moe":
                continue
            i, E = layer["layer"], layer["num_experts"]
            active[i] = active.get(i, 0) + sum(len(a) for a in layer["active_experts"])
            tokens[i] = tokens.get(i, 0) + len(layer["active_experts"]) * E
    per = {i: active[i] / tokens[i] for i in sorted(active)}
    return float(np.mean(list(per.values()))), per


def layout(model):
    return sorted((n, dt, tuple(s)) for n, (_, dt, s) in st.read_model_headers(model).items())


def digest(model):
    """Checkpoint files (the report carries wall-clock timings, compared separately)."""
    h = hashlib.sha256()
    for name in sorted(os.listdir(model)):
        if name == "generation_report.json":
            continue
        with open(os.path.join(model, name), "rb") as f:
            h.update(name.encode() + f.read())
    return h.hexdigest()


def fmt(per):
    return " ".join(f"{i}:{v:.3f}" for i, v in per.items())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--engine", required=True)
    ap.add_argument("--workdir", required=True)
    a = ap.parse_args(argv)
    wd = os.path.abspath(a.workdir)
    os.makedirs(wd, exist_ok=True)

    # (name, generator args, R, engine dtype)
    cases = [
        ("deco_tiny_0.2", ["--variant", "deco", "--size", "tiny", "--seed", "1", "--dtype", "bf16"], 0.2, "f32"),
        ("deco_tiny_0.35", ["--variant", "deco", "--size", "tiny", "--seed", "2", "--dtype", "bf16"], 0.35, "f32"),
        ("deco_small_0.2_bf16", ["--variant", "deco", "--size", "small", "--seed", "3", "--dtype", "bf16"], 0.2, "bf16"),
        ("deco_gated_0.2", ["--variant", "deco-gated", "--size", "tiny", "--seed", "4", "--dtype", "f32"], 0.2, "f32"),
        ("blockffn_v1_0.2", ["--variant", "blockffn-v1", "--size", "tiny", "--seed", "5", "--dtype", "bf16"], 0.2, "f32"),
        ("deco_bias_rms_0.2", ["--variant", "deco", "--size", "tiny", "--seed", "6", "--dtype", "f32",
                               "--set", "moe_router_enable_expert_bias=true",
                               "--set", "moe_expert_bias_apply_method=rms"], 0.2, "f32"),
        ("remoe_0.2", ["--variant", "remoe", "--size", "tiny", "--seed", "7", "--dtype", "bf16"], 0.2, "f32"),
    ]
    for name, args, R, dtype in cases:
        plain, model = os.path.join(wd, name + "_plain"), os.path.join(wd, name)
        gen(plain, *args)
        gen(model, *args, f"--target-activation={R}")
        V = st.read_model_headers(model)["model.embed_tokens.weight"][2][0]
        ids = prompts(V, int(args[args.index("--seed") + 1]))
        mean, per = engine_ratio(a.engine, model, wd, ids, dtype)
        check(f"{name}: engine ratio on held-out prompts within {TOL} of {R}", abs(mean - R) <= TOL,
              f"{mean:.4f} (per layer {fmt(per)}, engine --dtype {dtype}, "
              f"{PROMPTS}x{PROMPT_LEN} tokens)")
        rep = json.load(open(os.path.join(model, "generation_report.json")))
        held = rep["held_out"]["mean_ratio"]
        check(f"{name}: generation_report held-out ratio agrees with the engine",
              abs(held - mean) <= TOL, f"report {held:.4f}, calibration "
              f"{rep['calibration']['mean_ratio']:.4f}, engine {mean:.4f}")
        check(f"{name}: config.json unchanged by calibration",
              open(os.path.join(plain, "config.json"), "rb").read()
              == open(os.path.join(model, "config.json"), "rb").read())
        check(f"{name}: same tensor names, shapes and dtypes", layout(plain) == layout(model))
        if name == "deco_tiny_0.2":
            again = os.path.join(wd, name + "_again")
            gen(again, *args, f"--target-activation={R}")
            check(f"{name}: deterministic (byte-identical checkpoint on regeneration)",
                  digest(again) == digest(model))
            r1, r2 = (json.load(open(os.path.join(d, "generation_report.json"))) for d in (model, again))
            r1.pop("seconds"), r2.pop("seconds")
            check(f"{name}: same generation_report.json apart from timings", r1 == r2)
            base, bper = engine_ratio(a.engine, plain, wd, ids, dtype)
            check("uncalibrated random DECO activates about half of its experts (|ratio - 0.5| <= 0.1)",
                  abs(base - 0.5) <= 0.1 and abs(base - 0.2) > 0.15, f"{base:.4f} (per layer {fmt(bper)})")
            check("uncalibrated checkpoint writes no generation_report.json",
                  not os.path.exists(os.path.join(plain, "generation_report.json")))

    for variant in ("topk", "topp", "dense", "softmoe"):
        r = gen(os.path.join(wd, "refused"), "--variant", variant, "--target-activation", "0.2",
                expect_ok=False)
        check(f"--target-activation refused for {variant}",
              r.returncode != 0 and "--target-activation does not apply" in r.stderr,
              r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit {r.returncode}")

    print(f"[activation_target] {'PASS' if not failed else 'FAIL: ' + ', '.join(failed)}")
    return 0 if not failed else 1


if __name__ == "__main__":
    sys.exit(main())
