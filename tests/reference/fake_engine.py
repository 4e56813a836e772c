#!/usr/bin/python3
"""Stand-in for the moeserve engine CLI, built on the numpy reference. Used only to test the
test harness (run_case.py, compare.py) before/without the real engine:

  fake_engine.py --model DIR --token-ids 1,5 --max-new-tokens 0 --dtype f32|bf16
                 --dump-logits F --dump-routing F [--prefill-chunk N] [--dense-experts]

--dtype bf16 rounds weights and the main activations to bf16 (a rough bf16 engine).
FAKE_ENGINE_BUG=<name> injects a known engine bug so one can check the harness catches it:
  normsilu-block-mean  NormSiLU mean per expert block instead of over all E*d units
  rope-interleaved     GPT-J pairing (2i, 2i+1) instead of rotate-half
  gqa-modulo           query head j uses KV group j % n_g instead of j // (n_h/n_g)
  no-router-scale      skip the expert-wise scaling (g = r)
  gate-up-swap         swap gate and up of the dense/shared SwiGLU
  active-from-g        decide expert activity from g != 0 / g > 0 instead of the router logit
"""
import argparse
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools", "py"))
import deco_reference as R  # noqa: E402
import safetensors_io as st  # noqa: E402


def bf16(x):
    return st.bf16_bits_to_fp32(st.fp32_to_bf16_bits(np.asarray(x, np.float32))).astype(np.float64)


def round_outputs(fn):
    return lambda *a, **k: bf16(fn(*a, **k))


def round_first(fn):
    def g(*a, **k):
        out = fn(*a, **k)
        return (bf16(out[0]),) + tuple(out[1:])
    return g


def inject(bug, cfg, w):
    if bug == "normsilu-block-mean":
        def act(v, cfg, gamma):
            T = v.shape[0]
            c = v.reshape(T, cfg.E, cfg.d)
            c = c - c.mean(-1, keepdims=True)
            return R.silu(c / np.sqrt(np.mean(c * c, -1, keepdims=True) + cfg.eps) * gamma)
        R.expert_act = act
    elif bug == "rope-interleaved":
        def rope(z, theta):
            T, _, hd = z.shape
            inv = 1.0 / theta ** (np.arange(0, hd, 2) / hd)
            ang = np.arange(T)[:, None, None] * inv[None, None]
            x0, x1 = z[..., 0::2], z[..., 1::2]
            out = np.empty_like(z)
            out[..., 0::2] = x0 * np.cos(ang) - x1 * np.sin(ang)
            out[..., 1::2] = x1 * np.cos(ang) + x0 * np.sin(ang)
            return out
        R.rope = rope
    elif bug == "gqa-modulo":
        def attention(a, w, p, cfg):
            T, hd = a.shape[0], cfg.hd
            q = R.rope((a @ w[f"{p}.q_proj.weight"].T).reshape(T, cfg.n_h, hd), cfg.theta)
            k = R.rope((a @ w[f"{p}.k_proj.weight"].T).reshape(T, cfg.n_g, hd), cfg.theta)
            v = (a @ w[f"{p}.v_proj.weight"].T).reshape(T, cfg.n_g, hd)
            grp = np.arange(cfg.n_h) % cfg.n_g  # the bug
            s = np.einsum("thd,shd->hts", q, k[:, grp]) / np.sqrt(hd)
            s = np.where(np.tril(np.ones((T, T), bool))[None], s, -np.inf)
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            o = np.einsum("hts,shd->thd", s, v[:, grp]).reshape(T, -1)
            return o @ w[f"{p}.o_proj.weight"].T
        R.attention = attention
    elif bug == "no-router-scale":
        cfg.norm_type = "null"
    elif bug == "gate-up-swap":
        for k in list(w):
            if k.endswith("mlp.gate_proj.weight") or k.endswith("shared_experts.gate_proj.weight"):
                u = k.replace("gate_proj", "up_proj")
                w[k], w[u] = w[u], w[k]
    elif bug == "active-from-g":
        orig_r = R.blockffn_routing

        def routing(l, cfg, w, m):
            active, g, margins = orig_r(l, cfg, w, m)
            return g > 0, g, margins
        R.blockffn_routing = routing
    elif bug:
        sys.exit(f"fake_engine: unknown FAKE_ENGINE_BUG {bug!r}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--token-ids", required=True)
    ap.add_argument("--max-new-tokens", type=int, default=0)
    ap.add_argument("--dtype", default="f32", choices=["f32", "bf16"])
    ap.add_argument("--dump-logits")
    ap.add_argument("--dump-routing")
    ap.add_argument("--prefill-chunk", type=int)  # same math, nothing to do
    ap.add_argument("--dense-experts", action="store_true")
    a = ap.parse_args(argv)
    try:
        cfg, w, V = R.load_checkpoint(a.model)
    except R.RefError as e:
        print(f"fake_engine: error: {e}", file=sys.stderr)
        return 1
    inject(os.environ.get("FAKE_ENGINE_BUG", ""), cfg, w)
    if a.dtype == "bf16":
        for k in w:
            w[k] = bf16(w[k])
        for name in ("rms_norm", "attention", "swiglu", "silu"):
            setattr(R, name, round_outputs(getattr(R, name)))
        R.blockffn_layer = round_first(R.blockffn_layer)
        R.router_layer = round_first(R.router_layer)
    tokens = [int(t) for t in a.token_ids.split(",")]
    logits, routing = R.forward(cfg, w, tokens)
    if a.dtype == "f32":
        logits = logits.astype(np.float32)  # an fp32 engine's output precision
    if a.dump_logits:
        logits.astype("<f4").tofile(a.dump_logits)
    if a.dump_routing:
        for layer in routing:
            layer.pop("margins")  # the engine does not write margins
        with open(a.dump_routing, "w") as f:
            json.dump({"layers": routing}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
