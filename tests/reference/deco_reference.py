#!/usr/bin/python3
"""Independent float64 numpy reference of the DECO forward pass (spec deco.md §3-§4).

Full-sequence causal forward, no KV cache, every expert evaluated densely. Written from
the spec only, as the oracle for moeserve's engine tests.

  deco_reference.py --model DIR --token-ids 1,5,9 --dump-logits L.f32 --dump-routing R.json

Logits: raw little-endian float32 [T, V]. Routing JSON: {"layers": [{"layer", "kind",
"num_experts", "active_experts", "weights", "margins"}]}; per MoE layer and token: the active
set A (ids ascending), the weight each active expert gets in the combination, and the margin:
how far (max-norm over the router logits, to first order) the logits must move to flip any
routing decision — so a comparer's thresholds are in router-logit units for every router.
Refuses (exit 1, message on stderr) any checkpoint it cannot compute exactly.
"""
import argparse
import json
import math
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools", "py"))
import safetensors_io as st  # noqa: E402

BIG_MARGIN = 1e9  # "no decision boundary nearby" (JSON has no inf)


class RefError(Exception):
    pass


# ---------------------------------------------------------------- config

class Config:
    """Resolved model hyper-parameters: Megatron keys win, HF keys are fallbacks (§1.1)."""

    def __init__(self, raw):
        self.raw = raw
        g = self.get
        self.L = g("num_layers", "num_hidden_layers")
        self.H = g("hidden_size")
        self.n_h = g("num_attention_heads")
        self.n_g = g("num_query_groups", "num_key_value_heads", default=self.n_h)
        self.eps = float(g("norm_epsilon", "rms_norm_eps", default=1e-5))
        self.E = raw.get("num_experts")  # null => dense model
        self.use_blockffn = bool(g("use_blockffn", default=False))
        self.router_type = g("router_type", default="topk")
        freq = g("moe_layer_freq", default=1)
        if isinstance(freq, int) and not isinstance(freq, bool) and freq > 0:
            pattern = [i % freq == 0 for i in range(self.L)]
        elif isinstance(freq, list) and len(freq) == self.L and all(f in (0, 1) for f in freq):
            pattern = [f == 1 for f in freq]
        else:
            raise RefError(f"config.json: moe_layer_freq {freq!r} is not an int > 0 or a 0/1 list "
                           f"of num_layers={self.L} entries")
        self.is_moe = [bool(self.E) and p for p in pattern]
        self.F = g("ffn_hidden_size", "intermediate_size") if not all(self.is_moe) else None
        self.d = g("moe_ffn_hidden_size") if any(self.is_moe) else None
        self.S = raw.get("moe_shared_expert_intermediate_size") or 0
        # Upstream asserts a string (the string "null" = no scaling); a JSON null is ambiguous
        # ("unset" => default "simple", or "null"?), so it is refused in validate().
        self.norm_type = raw.get("router_norm_type", "simple")
        self.norm_fixed = bool(raw.get("router_norm_fixed", False))
        self.norm_scalar = bool(raw.get("router_norm_scalar", False))
        self.norm_init = float(raw.get("router_norm_init_var", 0.1))
        self.act = raw.get("expert_act_func", "norm_silu")
        self.gated = not bool(raw.get("expert_not_gated", False))
        self.bias = bool(raw.get("moe_router_enable_expert_bias", False))
        self.bias_method = raw.get("moe_expert_bias_apply_method", "base")
        self.topk = int(raw.get("moe_router_topk", 2))
        self.topp = float(raw.get("moe_router_topp", 0.5))
        self.score = raw.get("moe_router_score_function", "softmax")
        self.pre_softmax = bool(raw.get("moe_router_pre_softmax", False))
        self.topk_scale = raw.get("moe_router_topk_scaling_factor")
        self.clamp = float(raw.get("router_clamp_act_ratio", 1.0) or 1.0)
        self.theta = float(g("rope_theta", default=10000.0))
        self.validate()

    def get(self, key, *fallbacks, default=KeyError):
        for k in (key,) + fallbacks:
            if self.raw.get(k) is not None:
                return self.raw[k]
        if default is KeyError:
            raise RefError(f"config.json: missing key '{key}'")
        return default

    def validate(self):
        def need(cond, msg):
            if not cond:
                raise RefError("config.json: " + msg)
        r = self.raw
        need(not r.get("use_mup", False), "use_mup is true: muP factors are not exported, refusing")
        need(r.get("rope_scaling") is None, f"rope_scaling {r['rope_scaling']!r} is not supported "
             "(must be null)")
        need(self.H % self.n_h == 0, f"hidden_size {self.H} not divisible by num_attention_heads")
        need(self.n_g > 0 and self.n_h % self.n_g == 0,
             f"num_attention_heads {self.n_h} not divisible by num_query_groups {self.n_g}")
        self.hd = self.H // self.n_h
        need(self.hd % 2 == 0, "head dim must be even for RoPE")
        if not any(self.is_moe):
            return
        need(r.get("router_act_func", "relu") == "relu",
             f"router_act_func {r.get('router_act_func')!r} unsupported (only relu)")
        if self.use_blockffn:
            need(self.norm_type is not None, 'router_norm_type is JSON null: ambiguous, write '
                 '"null" (the string) for no scaling or "simple" for the DECO default')
            need(self.norm_type in ("simple", "rms", "normal", "null"),
                 f"unknown router_norm_type {self.norm_type!r}")
            need(self.act in ("norm_silu", "norm_silu_nomean", "norm_silu_norms", "silu"),
                 f"unknown expert_act_func {self.act!r}")
            need(r.get("expert_act_norm_type", "normal") == "normal",
                 "expert_act_norm_type must be 'normal'")
        else:
            need(self.router_type in ("topk", "remoe", "topp"),
                 f"unknown router_type {self.router_type!r}")
            if self.router_type == "topk":
                need(self.score in ("softmax", "sigmoid"),
                     f"unknown moe_router_score_function {self.score!r}")
                need(1 <= self.topk <= self.E, f"moe_router_topk {self.topk} out of range")
                need(not (self.bias and self.score == "softmax" and not self.pre_softmax),
                     "expert bias is invalid with post-softmax top-k routing")
        if self.bias:
            need(self.bias_method in ("base", "rms"),
                 f"unknown moe_expert_bias_apply_method {self.bias_method!r}")

    def expected_tensors(self, V, tied):
        """name -> shape, exactly the set of spec §1.2 for this config."""
        H, hd, E, d, S = self.H, self.hd, self.E, self.d, self.S
        t = {"model.embed_tokens.weight": (V, H), "model.norm.weight": (H,)}
        if not tied:
            t["lm_head.weight"] = (V, H)
        for i in range(self.L):
            p = f"model.layers.{i}"
            t[f"{p}.input_layernorm.weight"] = (H,)
            t[f"{p}.post_attention_layernorm.weight"] = (H,)
            t[f"{p}.self_attn.q_proj.weight"] = (self.n_h * hd, H)
            t[f"{p}.self_attn.k_proj.weight"] = (self.n_g * hd, H)
            t[f"{p}.self_attn.v_proj.weight"] = (self.n_g * hd, H)
            t[f"{p}.self_attn.o_proj.weight"] = (H, self.n_h * hd)
            m = f"{p}.mlp"
            if not self.is_moe[i]:
                t.update({f"{m}.gate_proj.weight": (self.F, H), f"{m}.up_proj.weight": (self.F, H),
                          f"{m}.down_proj.weight": (H, self.F)})
                continue
            if self.use_blockffn:
                t[f"{m}.moe_router.weight"] = (E, H)
                if not self.norm_fixed:
                    t[f"{m}.router_norm.weight"] = (1,) if self.norm_scalar else (E,)
                t[f"{m}.expert_up_proj.weight"] = (E * d, H)
                if self.gated:
                    t[f"{m}.expert_gate_proj.weight"] = (E * d, H)
                t[f"{m}.expert_down_proj.weight"] = (H, E * d)
                if self.act in ("norm_silu", "norm_silu_nomean"):
                    t[f"{m}.expert_act.rms_norm.weight"] = (d,)
                if self.bias:
                    t[f"{m}.expert_bias"] = (E,)
            else:
                t[f"{m}.router.weight"] = (E, H)
                if self.bias and self.router_type == "topk":
                    t[f"{m}.router.expert_bias"] = (E,)
                if self.gated:
                    t[f"{m}.experts.gate_proj.weight"] = (E, d, H)
                t[f"{m}.experts.up_proj.weight"] = (E, d, H)
                t[f"{m}.experts.down_proj.weight"] = (E, H, d)
            if self.S > 0:
                t.update({f"{m}.shared_experts.gate_proj.weight": (S, H),
                          f"{m}.shared_experts.up_proj.weight": (S, H),
                          f"{m}.shared_experts.down_proj.weight": (H, S)})
        return t


def load_checkpoint(model_dir):
    """-> (Config, weights float64 dict, V). Validates config against tensor shapes."""
    path = os.path.join(model_dir, "config.json")
    try:
        with open(path) as f:
            raw = json.load(f)
    except OSError as e:
        raise RefError(f"config.json: cannot read {path}: {e.strerror}")
    except json.JSONDecodeError as e:
        raise RefError(f"config.json: not valid JSON: {e}")
    if not isinstance(raw, dict):
        raise RefError("config.json: not a JSON object")
    cfg = Config(raw)
    try:
        shapes = {n: s for n, (_, _, s) in st.read_model_headers(model_dir).items()}
    except st.SafetensorsError as e:
        raise RefError(str(e))
    emb = shapes.get("model.embed_tokens.weight")
    if emb is None or len(emb) != 2:
        raise RefError("tensor 'model.embed_tokens.weight' missing or not 2-D")
    V = emb[0]  # vocab_size in config.json is stale; the embedding is authoritative
    if emb[1] != cfg.H:
        raise RefError(f"config.json: hidden_size {cfg.H} conflicts with "
                       f"model.embed_tokens.weight shape {list(emb)}")
    k0 = shapes.get("model.layers.0.self_attn.k_proj.weight")
    if k0 is not None and k0[0] != cfg.n_g * cfg.hd:
        raise RefError(f"config.json: num_query_groups {cfg.n_g} conflicts with "
                       f"model.layers.0.self_attn.k_proj.weight shape {list(k0)}")
    expected = cfg.expected_tensors(V, tied="lm_head.weight" not in shapes)
    for name, shape in expected.items():
        if name not in shapes:
            raise RefError(f"missing tensor '{name}'")
        if tuple(shapes[name]) != tuple(shape):
            raise RefError(f"tensor '{name}' has shape {list(shapes[name])}, config implies "
                           f"{list(shape)}")
    for name in shapes:
        if name not in expected:
            raise RefError(f"unexpected tensor '{name}' (not used by this config)")
    w = {k: v.astype(np.float64) for k, v in st.load_model(model_dir).items()}
    return cfg, w, V


# ---------------------------------------------------------------- math

def rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def silu(z):
    return z / (1.0 + np.exp(-z))


def swiglu(m, w, prefix):
    g = m @ w[f"{prefix}.gate_proj.weight"].T
    u = m @ w[f"{prefix}.up_proj.weight"].T
    return (silu(g) * u) @ w[f"{prefix}.down_proj.weight"].T


def rope(z, theta):
    """Rotate-half RoPE on [T, heads, hd]; inv_freq computed in fp32 like HF/Megatron."""
    T, _, hd = z.shape
    inv = (1.0 / (np.float32(theta) ** (np.arange(0, hd, 2, dtype=np.float32) / np.float32(hd))))
    ang = np.arange(T, dtype=np.float64)[:, None] * inv.astype(np.float32).astype(np.float64)[None]
    cos = np.concatenate([np.cos(ang)] * 2, axis=-1)[:, None, :]
    sin = np.concatenate([np.sin(ang)] * 2, axis=-1)[:, None, :]
    rot = np.concatenate([-z[..., hd // 2:], z[..., :hd // 2]], axis=-1)
    return z * cos + rot * sin


def attention(a, w, p, cfg):
    T, hd = a.shape[0], cfg.hd
    q = (a @ w[f"{p}.q_proj.weight"].T).reshape(T, cfg.n_h, hd)
    k = (a @ w[f"{p}.k_proj.weight"].T).reshape(T, cfg.n_g, hd)
    v = (a @ w[f"{p}.v_proj.weight"].T).reshape(T, cfg.n_g, hd)
    q, k = rope(q, cfg.theta), rope(k, cfg.theta)
    rep = cfg.n_h // cfg.n_g
    k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)  # head j -> group j // rep
    s = np.einsum("thd,shd->hts", q, k) / math.sqrt(hd)
    s = np.where(np.tril(np.ones((T, T), dtype=bool))[None], s, -np.inf)
    s = np.exp(s - s.max(axis=-1, keepdims=True))
    s /= s.sum(axis=-1, keepdims=True)
    o = np.einsum("hts,shd->thd", s, v).reshape(T, cfg.n_h * hd)
    return o @ w[f"{p}.o_proj.weight"].T


def expert_act(v, cfg, gamma):
    """§3.3 step 6 on [T, E*d] -> [T, E, d]. Means for the centring span all E*d units."""
    T, E, d, eps = v.shape[0], cfg.E, cfg.d, cfg.eps
    if cfg.act == "silu":
        return silu(v).reshape(T, E, d)
    c = v - v.mean(axis=-1, keepdims=True) if cfg.act != "norm_silu_nomean" else v
    c = c.reshape(T, E, d)
    if cfg.act == "norm_silu_norms":
        return silu(c)
    return silu(c / np.sqrt(np.mean(c * c, axis=-1, keepdims=True) + eps) * gamma)


def blockffn_routing(l, cfg, w, m):
    """-> (active bool [T,E], scaled weights g [T,E], margins [T]) per §3.3 steps 2-4."""
    r = np.maximum(l, 0.0)
    active = l > 0
    margin_e = np.abs(l)
    if cfg.bias:
        b = w[f"{m}.expert_bias"]
        rms = np.sqrt(np.mean(l * l, -1, keepdims=True))
        s = l + b if cfg.bias_method == "base" else l + b * rms
        # distance to flipping the AND of (l > 0, s > 0)
        margin_e = np.where(active & (s > 0), np.minimum(l, s),
                            np.maximum(np.maximum(-l, 0), np.maximum(-s, 0)))
        active = active & (s > 0)
        r = r * (s > 0)
    scale = cfg.norm_init if cfg.norm_fixed else w.get(f"{m}.router_norm.weight")
    eps = cfg.eps
    if cfg.norm_type == "simple":
        g = r * scale
    elif cfg.norm_type == "rms":
        g = r / np.sqrt(np.mean(r * r, -1, keepdims=True) + eps) * scale
    elif cfg.norm_type == "normal":
        rc = r - r.mean(-1, keepdims=True)
        g = rc / np.sqrt(np.mean(rc * rc, -1, keepdims=True) + eps) * scale
    else:  # null
        g = r
    return active, g, margin_e.min(axis=-1)


def blockffn_layer(m_in, w, m, cfg):
    l = m_in @ w[f"{m}.moe_router.weight"].T
    active, g, margins = blockffn_routing(l, cfg, w, m)
    u = m_in @ w[f"{m}.expert_up_proj.weight"].T
    gamma = w.get(f"{m}.expert_act.rms_norm.weight")
    if cfg.gated:
        h = expert_act(m_in @ w[f"{m}.expert_gate_proj.weight"].T, cfg, gamma) \
            * u.reshape(-1, cfg.E, cfg.d)
    else:
        h = expert_act(u, cfg, gamma)
    y = (g[:, :, None] * h).reshape(len(m_in), -1) @ w[f"{m}.expert_down_proj.weight"].T
    return y, active, g, margins


def topk_routing(l, cfg, w, m):
    T, E, k = l.shape[0], cfg.E, cfg.topk
    if cfg.score == "sigmoid":
        score = 1.0 / (1.0 + np.exp(-l))
    elif cfg.pre_softmax:
        score = np.exp(l - l.max(-1, keepdims=True))
        score /= score.sum(-1, keepdims=True)
    else:
        score = l  # post-softmax: select on raw logits, softmax over the chosen k
    sel = score
    if cfg.bias:
        b = w[f"{m}.router.expert_bias"]
        sel = score + b if cfg.bias_method == "base" else \
            score + b * np.sqrt(np.mean(score * score, -1, keepdims=True))
    order = np.argsort(-sel, axis=-1, kind="stable")
    active = np.zeros((T, E), dtype=bool)
    np.put_along_axis(active, order[:, :k], True, axis=-1)
    margins = np.full(T, BIG_MARGIN)
    if k < E:  # gap between the k-th and (k+1)-th selection score, in logit units
        a, b = order[:, k - 1:k], order[:, k:k + 1]
        gap = (np.take_along_axis(sel, a, -1) - np.take_along_axis(sel, b, -1))[:, 0]
        if cfg.score == "sigmoid":  # d sel_e / d l_e = sigma'(l_e)
            ds = score * (1 - score)
            rate = (np.take_along_axis(ds, a, -1) + np.take_along_axis(ds, b, -1))[:, 0]
        elif cfg.pre_softmax:  # grad (p_a - p_b) = p_a e_a - p_b e_b - (p_a - p_b) p
            pa, pb = np.take_along_axis(score, a, -1), np.take_along_axis(score, b, -1)
            grad = -(pa - pb) * score
            np.put_along_axis(grad, a, np.take_along_axis(grad, a, -1) + pa, -1)
            np.put_along_axis(grad, b, np.take_along_axis(grad, b, -1) - pb, -1)
            rate = np.abs(grad).sum(-1)
        else:
            rate = np.full(T, 2.0)
        margins = gap / np.maximum(rate, 1e-30)
    if cfg.score == "softmax" and not cfg.pre_softmax:
        ex = np.where(active, np.exp(l - np.where(active, l, -np.inf).max(-1, keepdims=True)), 0)
        wts = ex / ex.sum(-1, keepdims=True)
    else:
        wts = np.where(active, score, 0.0)
        if k > 1:
            wts = wts / (wts.sum(-1, keepdims=True) + 1e-20)
    if cfg.topk_scale:
        wts = wts * float(cfg.topk_scale)
    return active, wts, margins


def remoe_routing(l, cfg):
    T, E = l.shape
    r = np.maximum(l, 0.0)
    margins = np.abs(l).min(-1)
    if 0 < cfg.clamp < 1:
        K = int(math.floor(cfg.clamp * E))
        order = np.argsort(-r, axis=-1, kind="stable")
        keep = np.zeros((T, E), dtype=bool)
        np.put_along_axis(keep, order[:, :K], True, axis=-1)
        srt = np.take_along_axis(r, order, axis=-1)
        over = (r > 0).sum(-1) > K  # clamp only bites when more than K are positive
        if K < E:  # two logits moving in opposite directions close the gap at rate 2
            gap = (srt[:, K - 1] - srt[:, K]) / 2 if K > 0 else srt[:, 0]
            margins = np.where(over, np.minimum(margins, gap), margins)
        r = r * keep
    return r > 0, r, margins


def topp_routing(l, cfg):
    T, E = l.shape
    p = cfg.topp
    S = np.abs(l).sum(-1) + 1e-20
    q = np.abs(l) / S[:, None]
    active = np.zeros((T, E), dtype=bool)
    margins = np.empty(T)
    for t in range(T):
        order = np.argsort(-q[t], kind="stable")
        qs = q[t][order]
        cum = np.cumsum(qs)
        over = np.nonzero(cum > p)[0]
        n = int(over[0]) + 1 if len(over) else E  # shortest prefix exceeding p
        chosen = order[:n]
        active[t, chosen[q[t][chosen] > 0]] = True
        # Decisions: C_{n-1} <= p < C_n and the rank order of q_(n), q_(n+1). Convert each
        # gap to logit units: |grad C_j|_1 = (j (1 - C_j) + (E - j) C_j) / S, rank gap ~ 2 / S.
        rate = lambda j, c: max((j * (1 - c) + (E - j) * c) / S[t], 1e-30)  # noqa: E731
        prev = cum[n - 2] if n >= 2 else 0.0
        cands = [(p - prev) / rate(n - 1, prev) if n >= 2 else BIG_MARGIN]
        if len(over):
            cands.append((cum[n - 1] - p) / rate(n, cum[n - 1]))
        if n < E:
            cands.append((qs[n - 1] - qs[n]) * S[t] / 2)
        margins[t] = max(0.0, min(cands))
    return active, np.where(active, q, 0.0), margins


def router_layer(m_in, w, m, cfg):
    l = m_in @ w[f"{m}.router.weight"].T
    if cfg.router_type == "topk":
        active, wts, margins = topk_routing(l, cfg, w, m)
    elif cfg.router_type == "remoe":
        active, wts, margins = remoe_routing(l, cfg)
    else:
        active, wts, margins = topp_routing(l, cfg)
    up = np.einsum("th,edh->ted", m_in, w[f"{m}.experts.up_proj.weight"])
    if cfg.gated:
        h = silu(np.einsum("th,edh->ted", m_in, w[f"{m}.experts.gate_proj.weight"])) * up
    else:
        h = silu(up)
    out_e = np.einsum("ted,ehd->teh", h, w[f"{m}.experts.down_proj.weight"])
    y = np.einsum("te,teh->th", wts, out_e)  # wts is 0 outside the active set
    return y, active, wts, margins


def forward(cfg, w, tokens):
    """-> (logits [T, V] float64, routing list for the JSON dump)."""
    x = w["model.embed_tokens.weight"][np.asarray(tokens)]
    routing = []
    for i in range(cfg.L):
        p = f"model.layers.{i}"
        x = x + attention(rms_norm(x, w[f"{p}.input_layernorm.weight"], cfg.eps), w,
                          f"{p}.self_attn", cfg)
        m_in = rms_norm(x, w[f"{p}.post_attention_layernorm.weight"], cfg.eps)
        if not cfg.is_moe[i]:
            x = x + swiglu(m_in, w, f"{p}.mlp")
            routing.append(dict(layer=i, kind="dense", num_experts=0, active_experts=[],
                                weights=[], margins=[]))
            continue
        layer = blockffn_layer if cfg.use_blockffn else router_layer
        y, active, wts, margins = layer(m_in, w, f"{p}.mlp", cfg)
        if cfg.S > 0:
            y = y + swiglu(m_in, w, f"{p}.mlp.shared_experts")
        x = x + y
        ids = [np.nonzero(a)[0] for a in active]
        routing.append(dict(layer=i, kind="moe", num_experts=cfg.E,
                            active_experts=[e.tolist() for e in ids],
                            weights=[wts[t, e].tolist() for t, e in enumerate(ids)],
                            margins=[float(v) for v in margins]))
    x = rms_norm(x, w["model.norm.weight"], cfg.eps)
    head = w.get("lm_head.weight", w["model.embed_tokens.weight"])
    return x @ head.T, routing


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--token-ids", required=True, help="comma-separated, e.g. 1,5,9")
    ap.add_argument("--dump-logits")
    ap.add_argument("--dump-routing")
    ap.add_argument("--greedy", type=int, default=0, metavar="N",
                    help="also print N greedily generated token ids")
    a = ap.parse_args(argv)
    try:
        tokens = [int(t) for t in a.token_ids.split(",") if t.strip()]
        cfg, w, V = load_checkpoint(a.model)
        if not tokens or min(tokens) < 0 or max(tokens) >= V:
            raise RefError(f"token ids must be in [0, {V})")
        logits, routing = forward(cfg, w, tokens)
    except RefError as e:
        print(f"deco_reference: error: {e}", file=sys.stderr)
        return 1
    if a.dump_logits:
        logits.astype("<f4").tofile(a.dump_logits)
    if a.dump_routing:
        with open(a.dump_routing, "w") as f:
            json.dump({"layers": routing}, f)
    seq = list(tokens)
    for _ in range(a.greedy):
        seq.append(int(np.argmax(forward(cfg, w, seq)[0][-1])))
    print(f"deco_reference: T={len(tokens)} V={V} layers={cfg.L} "
          f"argmax_last={int(np.argmax(logits[-1]))}"
          + (f" greedy={','.join(map(str, seq[len(tokens):]))}" if a.greedy else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
