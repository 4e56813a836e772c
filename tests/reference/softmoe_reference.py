#!/usr/bin/python3
"""Independent float64 numpy reference of a SoftMoE server checkpoint (spec softmoe.md §7.2).

Full-sequence causal forward, no KV cache, every expert evaluated densely, the LapSum threshold
found by bisection (not the engine's sorted closed form). Written from the spec only, as the
oracle for moeserve's engine tests.

  softmoe_reference.py --model DIR --token-ids 1,5,9 --dump-logits L.f32 --dump-routing R.json

Logits: raw little-endian float32 [T, V]. Routing JSON as deco_reference.py: per MoE layer and
token the active set (ids ascending), the weights p_e, and the margin: the distance of the
closest p_i to the threshold θ (and of θ0 to a clamp bound), converted to router-logit units
with |d(p_i − θ)| <= 2·|dz|_max / α, so compare.py's thresholds mean the same as for DECO.
Refuses (exit 1, message on stderr) a checkpoint that breaks the contract.
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

BIG_MARGIN = 1e9


class RefError(Exception):
    pass


# ---------------------------------------------------------------- config (§7.2.1)

def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class Config:
    def __init__(self, raw):
        r = {k: v for k, v in raw.items() if v is not None}  # null = absent

        def need(cond, msg):
            if not cond:
                raise RefError("config.json: " + msg)

        def integer(key, lo, default=KeyError):
            if key not in r:
                need(default is not KeyError, f"missing key '{key}'")
                return default
            need(is_int(r[key]) and r[key] >= lo, f"'{key}' must be an int >= {lo}, got {r[key]!r}")
            return r[key]

        def number(key, default, ok=lambda v: True, what=""):
            if key not in r:
                return default
            need(is_num(r[key]) and ok(r[key]), f"'{key}' must be a number {what}, got {r[key]!r}")
            return float(r[key])

        def boolean(key):
            v = r.get(key, False)
            need(isinstance(v, bool), f"'{key}' must be a bool, got {v!r}")
            return v

        def enum(key, values):
            need(key in r, f"missing key '{key}'")
            need(r[key] in values, f"'{key}' must be one of {values}, got {r[key]!r}")
            return r[key]

        arch = r.get("architectures")
        need(isinstance(arch, list) and all(isinstance(a, str) for a in arch)
             and "SoftMoEForCausalLM" in arch, "architectures must contain 'SoftMoEForCausalLM'")
        need(r.get("model_type") == "softmoe", "model_type must be 'softmoe'")
        self.H = integer("hidden_size", 1)
        self.L = integer("num_layers", 1)
        self.n_h = integer("num_attention_heads", 1)
        self.n_g = integer("num_query_groups", 1, self.n_h)
        need(self.H % self.n_h == 0, "num_attention_heads must divide hidden_size")
        need(self.n_h % self.n_g == 0, "num_query_groups must divide num_attention_heads")
        self.hd = self.H // self.n_h
        self.V = integer("vocab_size", 1)
        self.P = integer("max_position_embeddings", 1)
        self.norm = enum("norm_type", ["rmsnorm", "layernorm"])
        self.eps = number("norm_epsilon", 1e-5, lambda v: v > 0, "> 0")
        self.pos = enum("position_embedding_type", ["rope", "learned_absolute"])
        if self.pos == "rope":
            self.theta = number("rotary_base", 10000.0, lambda v: v > 0, "> 0")
            need(self.hd % 2 == 0, "rope needs an even head dim")
        self.qkv_bias = boolean("add_qkv_bias")
        self.lin_bias = boolean("add_bias_linear")
        self.qkv_bias = self.qkv_bias or self.lin_bias
        self.tied = boolean("tie_word_embeddings")
        self.n = integer("num_experts", 2)
        self.F = integer("moe_ffn_hidden_size", 1)
        self.act = enum("expert_activation", ["gelu", "swiglu"])
        freq = r.get("moe_layer_freq", 1)
        if is_int(freq):
            need(freq >= 1, "moe_layer_freq must be >= 1")
            self.is_moe = [i % freq == 0 for i in range(self.L)]
        else:
            need(isinstance(freq, list) and len(freq) == self.L
                 and all(is_int(f) and f in (0, 1) for f in freq),
                 f"moe_layer_freq must be an int or a list of {self.L} 0/1 values")
            self.is_moe = [f == 1 for f in freq]
        self.Lm = sum(self.is_moe)
        need(self.Lm >= 1, "no MoE layer")
        if "ffn_hidden_size" in r or not all(self.is_moe):
            self.Fd = integer("ffn_hidden_size", 1)
        self.alpha = number("moe_router_lapsum_scale", 1.0, lambda v: v > 0, "> 0")
        self.c = number("moe_router_threshold_coeff", 1.8, lambda v: v >= 0, ">= 0")
        self.gamma = number("moe_router_cap_coeff", 2.0, lambda v: v > 0, "> 0")
        k = r.get("moe_router_k_per_layer")
        if k is not None:
            if isinstance(k, list):
                need(len(k) == self.Lm and all(is_num(v) for v in k),
                     f"moe_router_k_per_layer must hold {self.Lm} numbers")
                k = [float(v) for v in k]
            else:
                need(is_num(k), "moe_router_k_per_layer must be a number or a list")
                k = [float(k)] * self.Lm
        self.k_cfg = k
        self.K = number("moe_router_budget", None)
        eta = r.get("moe_router_budget_eta")
        if eta is not None:
            need(isinstance(eta, list) and len(eta) == self.Lm and all(is_num(v) for v in eta),
                 f"moe_router_budget_eta must hold {self.Lm} numbers")
        self.eta_cfg = eta

    def resolve_k(self, eta_tensor):
        """k_l per MoE ordinal, float64 (§7.2.1 'Resolving k_l')."""
        def need(cond, msg):
            if not cond:
                raise RefError("config.json: " + msg)
        need(not (self.eta_cfg is not None and eta_tensor is not None),
             "eta given both as moe_router_budget_eta and as tensor model.moe_budget.eta")
        eta = self.eta_cfg if self.eta_cfg is not None else eta_tensor
        need((eta is None) == (self.K is None), "moe_router_budget and eta go together")
        k_eta = None
        if eta is not None:
            eta = np.asarray(eta, dtype=np.float64)
            need(eta.shape == (self.Lm,) and np.isfinite(eta).all(), "eta must hold L_m finite values")
            need(self.K >= self.Lm, "moe_router_budget must be >= number of MoE layers")
            pi = np.exp(eta - eta.max())
            pi /= pi.sum()
            k_eta = 1.0 + (self.K - self.Lm) * pi
        if self.k_cfg is not None:
            k = np.asarray(self.k_cfg, dtype=np.float64)
            if k_eta is not None:
                need(bool(np.all(np.abs(k - k_eta) <= 1e-4)), "moe_router_k_per_layer disagrees with eta")
        else:
            need(k_eta is not None, "no k: need moe_router_k_per_layer or eta with moe_router_budget")
            k = k_eta
        need(bool(np.all((k > 0) & (k < self.n))), f"every k_l must be in (0, {self.n})")
        return k

    def tensors(self):
        """name -> shape, exactly the §7.2.2 set (eta excluded)."""
        H, hd, n, F = self.H, self.hd, self.n, self.F
        ln, sw, lb = self.norm == "layernorm", self.act == "swiglu", self.lin_bias
        t = {"model.embed_tokens.weight": (self.V, H)}
        if self.pos == "learned_absolute":
            t["model.embed_positions.weight"] = (self.P, H)

        def norm(p):
            t[p + ".weight"] = (H,)
            if ln:
                t[p + ".bias"] = (H,)
        for i in range(self.L):
            p = f"model.layers.{i}"
            norm(p + ".input_layernorm")
            norm(p + ".post_attention_layernorm")
            a = p + ".self_attn"
            t.update({a + ".q_proj.weight": (self.n_h * hd, H), a + ".k_proj.weight": (self.n_g * hd, H),
                      a + ".v_proj.weight": (self.n_g * hd, H), a + ".o_proj.weight": (H, self.n_h * hd)})
            if self.qkv_bias:
                t.update({a + ".q_proj.bias": (self.n_h * hd,), a + ".k_proj.bias": (self.n_g * hd,),
                          a + ".v_proj.bias": (self.n_g * hd,)})
            if lb:
                t[a + ".o_proj.bias"] = (H,)
            if self.is_moe[i]:
                m = p + ".mlp"
                t[m + ".router.weight"] = (n, H)
                t[m + ".experts.up_proj.weight"] = (n, F, H)
                t[m + ".experts.down_proj.weight"] = (n, H, F)
                if sw:
                    t[m + ".experts.gate_proj.weight"] = (n, F, H)
                if lb:
                    t[m + ".experts.up_proj.bias"] = (n, F)
                    t[m + ".experts.down_proj.bias"] = (n, H)
                    if sw:
                        t[m + ".experts.gate_proj.bias"] = (n, F)
            else:
                m, Fd = p + ".mlp", self.Fd
                t[m + ".up_proj.weight"] = (Fd, H)
                t[m + ".down_proj.weight"] = (H, Fd)
                if sw:
                    t[m + ".gate_proj.weight"] = (Fd, H)
                if lb:
                    t[m + ".up_proj.bias"] = (Fd,)
                    t[m + ".down_proj.bias"] = (H,)
                    if sw:
                        t[m + ".gate_proj.bias"] = (Fd,)
        norm("model.norm")
        if not self.tied:
            t["lm_head.weight"] = (self.V, H)
        return t


def load_checkpoint(model_dir):
    try:
        with open(os.path.join(model_dir, "config.json")) as f:
            raw = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise RefError(f"config.json: {e}")
    if not isinstance(raw, dict):
        raise RefError("config.json: not a JSON object")
    cfg = Config(raw)
    try:
        shapes = {n: tuple(s) for n, (_, _, s) in st.read_model_headers(model_dir).items()}
    except st.SafetensorsError as e:
        raise RefError(str(e))
    expected = cfg.tensors()
    for name, shape in expected.items():
        if name not in shapes:
            raise RefError(f"missing tensor '{name}'")
        if shapes[name] != shape:
            raise RefError(f"tensor '{name}' has shape {list(shapes[name])}, expected {list(shape)}")
    for name, shape in shapes.items():
        if name == "model.moe_budget.eta":
            if shape != (cfg.Lm,):
                raise RefError(f"tensor '{name}' has shape {list(shape)}, expected [{cfg.Lm}]")
        elif name not in expected:
            raise RefError(f"unexpected tensor '{name}'")
    w = {k: v.astype(np.float64) for k, v in st.load_model(model_dir).items()}
    cfg.k = cfg.resolve_k(w.get("model.moe_budget.eta"))
    return cfg, w


# ---------------------------------------------------------------- LapSum by bisection

def laplace_cdf(t):
    return np.where(t <= 0, 0.5 * np.exp(np.minimum(t, 0)), 1.0 - 0.5 * np.exp(-np.maximum(t, 0)))


def soft_topk_bisect(z, k, alpha):
    """p_i = F((z_i - tau)/alpha) with sum p = k; tau by bisection on the decreasing sum."""
    lo, hi = z.min() - 60.0 * alpha, z.max() + 60.0 * alpha  # sum(lo) ~ n >= k >= sum(hi) ~ 0
    for _ in range(300):
        mid = 0.5 * (lo + hi)
        if mid == lo or mid == hi:
            break
        if laplace_cdf((z - mid) / alpha).sum() > k:
            lo = mid
        else:
            hi = mid
    tau = 0.5 * (lo + hi)
    return laplace_cdf((z - tau) / alpha), tau


def truncate(p, k, n, c, gamma):
    """-> (active bool [n], theta, theta0, margin in weight units) per §3."""
    cap = min(math.ceil(gamma * k), n)
    theta0 = float(np.float32(c * k / n))
    srt = np.sort(p)[::-1]
    lo, hi = srt[cap - 1], srt[0]
    theta = min(max(theta0, lo), hi)
    active = p >= theta
    others = np.abs(p[p != theta] - theta)
    margin = others.min() if len(others) else BIG_MARGIN
    if theta != theta0:
        margin = min(margin, abs(theta0 - theta))
    return active, theta, margin


# ---------------------------------------------------------------- forward (§7.2.3)

def norm(x, w, prefix, cfg):
    if cfg.norm == "rmsnorm":
        return x / np.sqrt(np.mean(x * x, -1, keepdims=True) + cfg.eps) * w[prefix + ".weight"]
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + cfg.eps) * w[prefix + ".weight"] + w[prefix + ".bias"]


def linear(x, w, prefix):
    y = x @ w[prefix + ".weight"].T
    b = w.get(prefix + ".bias")
    return y if b is None else y + b


def gelu(u):
    erf = np.vectorize(math.erf)
    return 0.5 * u * (1.0 + erf(u / math.sqrt(2.0)))


def silu(u):
    return u / (1.0 + np.exp(-u))


def rope(z, theta):
    T, _, hd = z.shape
    half = hd // 2
    inv = (np.float32(1.0) / (np.float32(theta) ** (np.arange(half, dtype=np.float32) * np.float32(2) / np.float32(hd))))
    ang = np.arange(T, dtype=np.float64)[:, None] * inv.astype(np.float64)[None, :]
    c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    a, b = z[..., :half], z[..., half:]
    return np.concatenate([a * c - b * s, b * c + a * s], axis=-1)


def attention(a, w, p, cfg):
    T, hd = a.shape[0], cfg.hd
    q = linear(a, w, p + ".q_proj").reshape(T, cfg.n_h, hd)
    k = linear(a, w, p + ".k_proj").reshape(T, cfg.n_g, hd)
    v = linear(a, w, p + ".v_proj").reshape(T, cfg.n_g, hd)
    if cfg.pos == "rope":
        q, k = rope(q, cfg.theta), rope(k, cfg.theta)
    out = np.zeros((T, cfg.n_h, hd))
    group = cfg.n_h // cfg.n_g
    mask = np.tril(np.ones((T, T), dtype=bool))
    for j in range(cfg.n_h):
        g = j // group
        s = q[:, j, :] @ k[:, g, :].T / math.sqrt(hd)
        s = np.where(mask, s, -np.inf)
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        out[:, j, :] = s @ v[:, g, :]
    return linear(out.reshape(T, cfg.n_h * hd), w, p + ".o_proj")


def ffn(m, up, down, gate, b_up, b_down, b_gate, act):
    """One FFN (dense or one expert), biases may be None."""
    u = m @ up.T + (0 if b_up is None else b_up)
    if act == "gelu":
        h = gelu(u)
    else:
        g = m @ gate.T + (0 if b_gate is None else b_gate)
        h = silu(g) * u
    return h @ down.T + (0 if b_down is None else b_down)


def moe(m, w, p, cfg, k):
    T, n = m.shape[0], cfg.n
    z = m @ w[p + ".router.weight"].T
    get = lambda name: w.get(f"{p}.experts.{name}")  # noqa: E731
    outs = []
    for e in range(n):  # dense: every expert, then weights zero outside the active set
        sl = lambda t: None if t is None else t[e]  # noqa: E731
        outs.append(ffn(m, get("up_proj.weight")[e], get("down_proj.weight")[e], sl(get("gate_proj.weight")),
                        sl(get("up_proj.bias")), sl(get("down_proj.bias")), sl(get("gate_proj.bias")),
                        cfg.act))
    y = np.zeros_like(m)
    ids, wts, margins = [], [], []
    for t in range(T):
        pt, _ = soft_topk_bisect(z[t], k, cfg.alpha)
        active, _, margin = truncate(pt, k, n, cfg.c, cfg.gamma)
        act_ids = np.nonzero(active)[0]
        for e in act_ids:
            y[t] += pt[e] * outs[e][t]  # whole expert output, down bias included; no renormalisation
        ids.append(act_ids.tolist())
        wts.append([float(pt[e]) for e in act_ids])
        margins.append(float(margin * cfg.alpha / 2.0))
    return y, ids, wts, margins


def forward(cfg, w, tokens):
    T = len(tokens)
    if T > cfg.P:
        raise RefError(f"{T} tokens exceed max_position_embeddings={cfg.P}")
    x = w["model.embed_tokens.weight"][np.asarray(tokens)]
    if cfg.pos == "learned_absolute":
        x = x + w["model.embed_positions.weight"][:T]
    routing, j = [], 0
    for i in range(cfg.L):
        p = f"model.layers.{i}"
        x = x + attention(norm(x, w, p + ".input_layernorm", cfg), w, p + ".self_attn", cfg)
        m = norm(x, w, p + ".post_attention_layernorm", cfg)
        if cfg.is_moe[i]:
            y, ids, wts, margins = moe(m, w, p + ".mlp", cfg, cfg.k[j])
            j += 1
            routing.append(dict(layer=i, kind="moe", num_experts=cfg.n, active_experts=ids, weights=wts,
                                margins=margins))
        else:
            d = p + ".mlp"
            y = ffn(m, w[d + ".up_proj.weight"], w[d + ".down_proj.weight"], w.get(d + ".gate_proj.weight"),
                    w.get(d + ".up_proj.bias"), w.get(d + ".down_proj.bias"), w.get(d + ".gate_proj.bias"),
                    cfg.act)
            routing.append(dict(layer=i, kind="dense", num_experts=0, active_experts=[], weights=[],
                                margins=[]))
        x = x + y
    head = w["model.embed_tokens.weight"] if cfg.tied else w["lm_head.weight"]
    return norm(x, w, "model.norm", cfg) @ head.T, routing


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--token-ids", required=True)
    ap.add_argument("--dump-logits")
    ap.add_argument("--dump-routing")
    a = ap.parse_args(argv)
    try:
        tokens = [int(t) for t in a.token_ids.split(",") if t.strip()]
        cfg, w = load_checkpoint(a.model)
        if not tokens or min(tokens) < 0 or max(tokens) >= cfg.V:
            raise RefError(f"token ids must be in [0, {cfg.V})")
        logits, routing = forward(cfg, w, tokens)
    except RefError as e:
        print(f"softmoe_reference: error: {e}", file=sys.stderr)
        return 1
    if a.dump_logits:
        logits.astype("<f4").tofile(a.dump_logits)
    if a.dump_routing:
        with open(a.dump_routing, "w") as f:
            json.dump({"layers": routing}, f)
    mean_active = [float(np.mean([len(s) for s in r["active_experts"]])) for r in routing if r["kind"] == "moe"]
    print(f"softmoe_reference: T={len(tokens)} V={cfg.V} layers={cfg.L} k={[round(v, 4) for v in cfg.k]} "
          f"mean_active={[round(v, 2) for v in mean_active]} argmax_last={int(np.argmax(logits[-1]))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
