#!/usr/bin/python3
"""Self-tests of the Python side: safetensors I/O, bf16 rounding, the generator (determinism,
tensor set per config knob) and the numpy reference (sparse NormSiLU == dense formula,
causality/prefix invariance, router invariants, agreement with an independent torch forward).

  reference_selftest.py [--workdir DIR]     exit 0 iff every check passes
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tools", "py"))
sys.path.insert(0, HERE)
import deco_reference as R  # noqa: E402
import safetensors_io as st  # noqa: E402

GEN = os.path.join(ROOT, "tools", "gen_tiny_model.py")


def gen(out, *args):
    subprocess.run([sys.executable, GEN, "--out", out, "--size", "tiny", *args], check=True,
                   capture_output=True)
    return out


def check(name, cond, detail=""):
    print(f"  {'ok  ' if cond else 'FAIL'} {name}{(': ' + detail) if detail else ''}")
    if not cond:
        check.failed += 1


check.failed = 0


def test_bf16():
    bits = lambda v: int(st.fp32_to_bf16_bits(np.array([v], np.float32))[0])  # noqa: E731
    f = lambda u: np.array([u], np.uint32).view(np.float32)[0]  # noqa: E731
    check("bf16 exact values", bits(1.0) == 0x3F80 and bits(-2.5) == 0xC020)
    check("bf16 tie rounds to even (down)", bits(f(0x3F808000)) == 0x3F80)
    check("bf16 tie rounds to even (up)", bits(f(0x3F818000)) == 0x3F82)
    check("bf16 above half rounds up", bits(f(0x3F808001)) == 0x3F81)
    check("bf16 inf/nan", bits(np.inf) == 0x7F80 and np.isnan(st.bf16_bits_to_fp32(
        st.fp32_to_bf16_bits(np.array([np.nan], np.float32))))[0])
    check("bf16 max finite rounds to inf", bits(f(0x7F7FFFFF)) == 0x7F80)
    x = np.random.default_rng(0).standard_normal(100000).astype(np.float32) * 10
    rt = st.bf16_bits_to_fp32(st.fp32_to_bf16_bits(x))
    check("bf16 round trip rel err <= 2^-8", np.all(np.abs(rt - x) <= np.abs(x) * 2.0 ** -8))
    try:
        import torch
        tb = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
        check("bf16 matches torch rounding", np.array_equal(tb, st.fp32_to_bf16_bits(x)))
    except ImportError:
        print("  skip torch comparison (no torch)")


def test_safetensors(tmp):
    rng = np.random.default_rng(1)
    t = {"a": rng.standard_normal((3, 5)).astype(np.float32), "b": rng.standard_normal(7),
         "c": rng.standard_normal((2, 2, 2))}
    for dt in ("F32", "F16", "BF16"):
        p = os.path.join(tmp, f"x_{dt}.safetensors")
        st.save_file(t, p, dt, metadata={"format": "pt"})
        back = st.load_file(p)
        tol = {"F32": 1e-7, "F16": 1e-3, "BF16": 4e-3}[dt]  # inputs b, c are float64
        ok = all(np.allclose(back[k], t[k], rtol=tol, atol=tol) and back[k].shape == t[k].shape
                 for k in t)
        check(f"safetensors {dt} round trip", ok)
        with open(p, "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
        check(f"safetensors {dt} header padded to 8", n % 8 == 0)
    bad = os.path.join(tmp, "short.safetensors")
    with open(bad, "wb") as fh:
        fh.write(b"\x01\x02")
    try:
        st.read_header(bad)
        check("short file refused", False)
    except st.SafetensorsError as e:
        check("short file refused", "short.safetensors" in str(e), str(e))


def test_generator(tmp):
    a = gen(os.path.join(tmp, "g_a"), "--seed", "3", "--dtype", "bf16")
    b = gen(os.path.join(tmp, "g_b"), "--seed", "3", "--dtype", "bf16")
    c = gen(os.path.join(tmp, "g_c"), "--seed", "3", "--dtype", "bf16", "--shards", "3")
    d = gen(os.path.join(tmp, "g_d"), "--seed", "4", "--dtype", "bf16")
    same = lambda x, y: open(x, "rb").read() == open(y, "rb").read()  # noqa: E731
    check("generator: same seed => identical bytes",
          same(f"{a}/model.safetensors", f"{b}/model.safetensors")
          and same(f"{a}/config.json", f"{b}/config.json"))
    ta, tc, td = st.load_model(a), st.load_model(c), st.load_model(d)
    check("generator: 3 shards hold the same tensors",
          sorted(ta) == sorted(tc) and all(np.array_equal(ta[k], tc[k]) for k in ta))
    check("generator: 3 shard files + index", len([f for f in os.listdir(c) if
                                                    f.startswith("model-")]) == 3
          and os.path.exists(f"{c}/{st.INDEX_NAME}"))
    check("generator: other seed => other weights",
          not np.array_equal(ta["model.layers.1.mlp.moe_router.weight"],
                             td["model.layers.1.mlp.moe_router.weight"]))
    cfg = json.load(open(f"{a}/config.json"))
    check("config: stale HF keys present and wrong",
          cfg["num_hidden_layers"] != cfg["num_layers"]
          and cfg["num_key_value_heads"] != cfg["num_query_groups"]
          and cfg["intermediate_size"] != cfg["ffn_hidden_size"]
          and cfg["vocab_size"] != ta["model.embed_tokens.weight"].shape[0]
          and cfg["router_type"] == "topk" and cfg["use_blockffn"] is True)
    check("config: GQA in tiny", ta["model.layers.0.self_attn.k_proj.weight"].shape[0] * 2
          == ta["model.layers.0.self_attn.q_proj.weight"].shape[0])
    rn = ta["model.layers.1.mlp.router_norm.weight"]
    check("init: router_norm ~0.1 with a negative", 0.02 < np.median(np.abs(rn)) < 0.3
          and (rn < 0).any())


# (variant, --set list, extra generator args) covering every config knob of the brief
KNOBS = [
    ("deco", [], []), ("deco-gated", [], []), ("blockffn-v1", [], []), ("dense", [], []),
    ("topk", [], []), ("remoe", [], []), ("topp", [], []),
    ("deco", ["router_norm_type=rms"], []), ("deco", ["router_norm_type=normal"], []),
    ("deco", ['router_norm_type="null"'], []),
    ("deco", ["router_norm_fixed=true"], []), ("deco", ["router_norm_scalar=true"], []),
    ("deco", ["moe_router_enable_expert_bias=true"], []),
    ("deco", ["moe_router_enable_expert_bias=true", "moe_expert_bias_apply_method=rms"], []),
    ("deco", ["expert_act_func=norm_silu_nomean"], []),
    ("deco", ["expert_act_func=norm_silu_norms"], []), ("deco", ["expert_act_func=silu"], []),
    ("deco-gated", ["expert_act_func=norm_silu_nomean"], []),
    ("deco", ["moe_shared_expert_intermediate_size=0"], []),
    ("deco", ["moe_shared_expert_intermediate_size=null"], []), ("deco", [], ["--tied"]),
    ("topk", ["moe_router_score_function=softmax", "moe_router_pre_softmax=true"], []),
    ("topk", ["moe_router_score_function=softmax", "moe_router_pre_softmax=false",
              "moe_router_enable_expert_bias=false"], []),
    ("topk", ["moe_router_enable_expert_bias=true", "moe_expert_bias_apply_method=rms"], []),
    ("topk", ["moe_router_topk=1"], []),
    ("remoe", ["router_clamp_act_ratio=0.5"], []), ("topp", ["moe_router_topp=0.3"], []),
    ("deco", ["num_layers=5"], []), ("deco", ["moe_layer_freq=2", "num_layers=4"], []),
    ("deco", ["hidden_size=96", "num_attention_heads=6", "num_query_groups=3"], []),
    ("deco", ["norm_epsilon=1e-6"], []),
]


def test_knobs(tmp):
    rng = np.random.default_rng(5)
    for i, (variant, sets, extra) in enumerate(KNOBS):
        out = os.path.join(tmp, f"k{i}")
        gen(out, "--variant", variant, "--seed", str(i), "--dtype", "f32", *extra,
            *sum((["--set", s] for s in sets), []))
        label = f"{variant} {' '.join(sets + extra)}".strip()
        try:
            cfg, w, V = R.load_checkpoint(out)  # raises unless the tensor set is exact
        except R.RefError as e:
            check(f"knob {label}", False, str(e))
            continue
        toks = [1] + list(rng.integers(3, V, 11))
        logits, routing = R.forward(cfg, w, toks)
        moe = [l for l in routing if l["kind"] == "moe"]
        n_act = [len(a) for l in moe for a in l["active_experts"]]
        ok = np.isfinite(logits).all() and 0.3 < logits.std() < 20
        msg = f"logit std {logits.std():.2f}"
        if moe:
            msg += f", mean active {np.mean(n_act):.2f}/{moe[0]['num_experts']}"
            ok &= router_invariants(cfg, moe)
        # causal: a prefix's logits equal the first rows of the full run
        ok &= np.allclose(R.forward(cfg, w, toks[:5])[0], logits[:5], atol=1e-9)
        check(f"knob {label}", ok, msg)
    out = os.path.join(tmp, "k_jsonnull")
    gen(out, "--set", "router_norm_type=null")  # JSON null, not the string "null"
    try:
        R.load_checkpoint(out)
        check("router_norm_type JSON null refused", False)
    except R.RefError as e:
        check("router_norm_type JSON null refused", "router_norm_type" in str(e))


def router_invariants(cfg, moe):
    ok = True
    for l in moe:
        for ids, ws in zip(l["active_experts"], l["weights"]):
            if not cfg.use_blockffn and cfg.router_type == "topk":
                ok &= len(ids) == cfg.topk
                target = float(cfg.topk_scale or 1.0)
                if cfg.topk > 1 or cfg.score == "softmax" and not cfg.pre_softmax:
                    ok &= abs(sum(ws) - target) < 1e-9
            elif not cfg.use_blockffn and cfg.router_type == "topp":
                ok &= sum(ws) > cfg.topp and sum(ws) - min(ws) <= cfg.topp + 1e-12
            elif not cfg.use_blockffn and 0 < cfg.clamp < 1:
                ok &= len(ids) <= int(cfg.clamp * cfg.E)
            ok &= list(ids) == sorted(ids)
    return ok


def sparse_blockffn(m_in, w, m, cfg):
    """§3.3 evaluated sparsely: only active experts, NormSiLU mean via u_bar . m."""
    l = m_in @ w[f"{m}.moe_router.weight"].T
    active, g, _ = R.blockffn_routing(l, cfg, w, m)
    up, down = w[f"{m}.expert_up_proj.weight"], w[f"{m}.expert_down_proj.weight"]
    src = w[f"{m}.expert_gate_proj.weight"] if cfg.gated else up
    ubar = src.mean(axis=0)  # (1/(E d)) sum of rows
    gamma = w.get(f"{m}.expert_act.rms_norm.weight")
    y = np.zeros((len(m_in), down.shape[0]))
    d = cfg.d
    for t in range(len(m_in)):
        mean = m_in[t] @ ubar
        for e in np.nonzero(active[t])[0]:
            rows = slice(e * d, (e + 1) * d)
            v = src[rows] @ m_in[t]
            c = v - mean if cfg.act != "norm_silu_nomean" else v
            if cfg.act == "silu":
                h = R.silu(v)
            elif cfg.act == "norm_silu_norms":
                h = R.silu(c)
            else:
                h = R.silu(c / np.sqrt(np.mean(c * c) + cfg.eps) * gamma)
            if cfg.gated:
                h = h * (up[rows] @ m_in[t])
            y[t] += g[t, e] * (down[:, rows] @ h)
    return y


def test_sparse(tmp):
    rng = np.random.default_rng(9)
    for variant, sets in [("deco", []), ("deco-gated", []), ("blockffn-v1", []),
                          ("deco", ["expert_act_func=norm_silu_nomean"]),
                          ("deco", ["expert_act_func=norm_silu_norms"]),
                          ("deco", ["router_norm_type=rms", "moe_router_enable_expert_bias=true"])]:
        out = gen(os.path.join(tmp, "sp"), "--variant", variant, "--seed", "2", "--dtype", "f32",
                  *sum((["--set", s] for s in sets), []))
        cfg, w, _ = R.load_checkpoint(out)
        m_in = rng.standard_normal((9, cfg.H))
        dense, *_ = R.blockffn_layer(m_in, w, "model.layers.1.mlp", cfg)
        sparse = sparse_blockffn(m_in, w, "model.layers.1.mlp", cfg)
        err = np.abs(dense - sparse).max()
        check(f"sparse == dense BlockFFN ({variant} {' '.join(sets)})".replace(" )", ")"),
              err < 1e-10, f"max err {err:.2e}")
    # the mean axis matters: a per-expert mean gives a clearly different result
    cfg, w, _ = R.load_checkpoint(gen(os.path.join(tmp, "sp"), "--seed", "2", "--dtype", "f32"))
    u = rng.standard_normal((4, cfg.H)) @ w["model.layers.1.mlp.expert_up_proj.weight"].T
    gamma = w["model.layers.1.mlp.expert_act.rms_norm.weight"]
    per_block = u.reshape(4, cfg.E, cfg.d)
    per_block = per_block - per_block.mean(-1, keepdims=True)
    alt = R.silu(per_block / np.sqrt(np.mean(per_block ** 2, -1, keepdims=True) + cfg.eps) * gamma)
    check("NormSiLU global vs per-expert mean differ clearly",
          np.abs(alt - R.expert_act(u, cfg, gamma)).max() > 0.05)


def test_torch_crosscheck(tmp):
    """An independent torch forward (DECO only, float64) must match the numpy reference."""
    try:
        import torch
    except ImportError:
        print("  skip torch cross-check (no torch)")
        return
    for variant in ("deco", "deco-gated"):
        out = gen(os.path.join(tmp, "tc"), "--variant", variant, "--seed", "6", "--dtype", "bf16")
        cfg, w, V = R.load_checkpoint(out)
        toks = [1] + list(np.random.default_rng(6).integers(3, V, 15))
        ref, _ = R.forward(cfg, w, toks)
        got = torch_deco(json.load(open(f"{out}/config.json")), w, toks, torch)
        err = np.abs(ref - got).max()
        check(f"torch float64 forward == reference ({variant})", err < 1e-9, f"max {err:.2e}")


def torch_deco(c, w, toks, torch):
    W = {k: torch.from_numpy(v) for k, v in w.items()}
    H, nh, ng, E, d = (c["hidden_size"], c["num_attention_heads"], c["num_query_groups"],
                       c["num_experts"], c["moe_ffn_hidden_size"])
    eps, hd, T = c["norm_epsilon"], H // nh, len(toks)
    silu, F = torch.nn.functional.silu, torch.nn.functional

    def rms(x, wt):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * wt

    inv = (1.0 / (10000.0 ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))).double()
    ang = torch.arange(T, dtype=torch.float64)[:, None] * inv[None]
    cos, sin = torch.cat([ang.cos()] * 2, -1)[:, None], torch.cat([ang.sin()] * 2, -1)[:, None]

    def rope(z):
        return z * cos + torch.cat([-z[..., hd // 2:], z[..., :hd // 2]], -1) * sin

    def swiglu(m, p):
        return F.linear(silu(F.linear(m, W[p + ".gate_proj.weight"])) *
                        F.linear(m, W[p + ".up_proj.weight"]), W[p + ".down_proj.weight"])

    x = W["model.embed_tokens.weight"][torch.tensor(toks)]
    for i in range(c["num_layers"]):
        p = f"model.layers.{i}"
        a = rms(x, W[p + ".input_layernorm.weight"])
        q = rope(F.linear(a, W[p + ".self_attn.q_proj.weight"]).view(T, nh, hd)).transpose(0, 1)
        k = rope(F.linear(a, W[p + ".self_attn.k_proj.weight"]).view(T, ng, hd)).transpose(0, 1)
        v = F.linear(a, W[p + ".self_attn.v_proj.weight"]).view(T, ng, hd).transpose(0, 1)
        k, v = k.repeat_interleave(nh // ng, 0), v.repeat_interleave(nh // ng, 0)
        s = (q @ k.transpose(1, 2) / hd ** 0.5).masked_fill(
            ~torch.ones(T, T, dtype=torch.bool).tril(), float("-inf")).softmax(-1)
        x = x + F.linear((s @ v).transpose(0, 1).reshape(T, H), W[p + ".self_attn.o_proj.weight"])
        m = rms(x, W[p + ".post_attention_layernorm.weight"])
        if not c["moe_layer_freq"][i]:
            x = x + swiglu(m, p + ".mlp")
            continue
        mp = p + ".mlp"
        g = F.linear(m, W[mp + ".moe_router.weight"]).clamp(min=0) * W[mp + ".router_norm.weight"]
        u = F.linear(m, W[mp + ".expert_up_proj.weight"])
        gated = mp + ".expert_gate_proj.weight" in W
        z = F.linear(m, W[mp + ".expert_gate_proj.weight"]) if gated else u
        zc = (z - z.mean(-1, keepdim=True)).view(T, E, d)
        h = silu(rms(zc, W[mp + ".expert_act.rms_norm.weight"]))
        h = h * u.view(T, E, d) if gated else h
        y = F.linear((h * g[:, :, None]).reshape(T, E * d), W[mp + ".expert_down_proj.weight"])
        x = x + y + swiglu(m, mp + ".shared_experts")
    x = rms(x, W["model.norm.weight"])
    return F.linear(x, W.get("lm_head.weight", W["model.embed_tokens.weight"])).numpy()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workdir")
    a = ap.parse_args(argv)
    if a.workdir:
        os.makedirs(a.workdir, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=a.workdir) as tmp:
        for name, fn in [("bf16", test_bf16), ("safetensors", test_safetensors),
                         ("generator", test_generator), ("config knobs", test_knobs),
                         ("sparse evaluation", test_sparse), ("torch cross-check",
                                                              test_torch_crosscheck)]:
            print(f"[{name}]")
            fn() if fn is test_bf16 else fn(tmp)
    print(f"reference_selftest: {'FAIL (%d)' % check.failed if check.failed else 'PASS'}")
    return 1 if check.failed else 0


if __name__ == "__main__":
    sys.exit(main())
