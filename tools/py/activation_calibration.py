"""Calibrate a random ReLU-router checkpoint to a target expert activation ratio.

Used by tools/gen_tiny_model.py --target-activation R. A float32 numpy forward of the DECO
spec (deco.md §3: BlockFFN/DECO layers with every router_norm_type / expert_act_func /
gating / expert-bias option, ReMoE layers §4.3, dense layers) written for this purpose; it
shares no code with the test oracle tests/reference/deco_reference.py.

Why the embedding gets a constant component. In a random checkpoint the router inputs
m = RMS(x; post_attention_layernorm) are zero-mean and sign-symmetric, so a bias-free linear
router w·m is positive for half the tokens whatever w is: no choice of router rows alone gives a
ratio other than ~0.5 (that is the ~0.5 a random DECO model shows). Trained models are not like
that: their residual stream carries a large shared component (the well-known "massive
activation" channels), which is what lets a ReLU router without a bias switch most experts off.
So calibration (1) adds a fixed random vector c (per-dimension RMS DC_RMS, from the seeded RNG)
to every row of model.embed_tokens.weight; the residual connections carry it to every layer.
(2) Then, MoE layer by MoE layer in order, it runs the checkpoint's own forward (weights already
rounded to the stored dtype, earlier layers already calibrated) on calibration sequences
(BOS + uniform random ids from the seeded RNG), takes the layer's router inputs M [N, H], the
unit mean direction b = mean(M)/|mean(M)|, and replaces router row e by  W_e + a_e·b  with a_e
found by bisection so that the fraction of calibration tokens on which expert e is active --
exactly as spec §3.3 defines activity, l_e > 0, and s_e > 0 with moe_router_enable_expert_bias
-- is R' for every expert. R' is R corrected for over-fitting: a leave-one-sequence-out fit
estimates how far the ratio on unseen sequences ends up from the in-sample one, and R' is moved
by that amount (it is reported per layer; typically R' = R - 0.002 ... 0.01). The new router is
rounded to the stored dtype before that layer's output is computed, so the ratios measured in
the same pass are those of the stored checkpoint. (3) A held-out set of sequences (another RNG
stream, another length) is then run through the final weights and measured the same way.

Tensor names, shapes, dtypes and config.json stay exactly those of a DECO export; only the
values of model.embed_tokens.weight and of the router weights change.
ReMoE (router_type remoe, ReLU router without scaling) gets the same treatment on
mlp.router.weight, calibrating l_e > 0 before router_clamp_act_ratio (the clamp can only lower
the realised ratio). Top-k (exactly k active) and TopP routers have no ReLU activity to set.
"""
import math
import time

import numpy as np

DC_RMS = 0.5  # per-dimension RMS of the constant embedding component (embedding rows: N(0, 1))


class CalibrationError(Exception):
    pass


def applicable(cfg):
    """-> None if --target-activation applies to this config, else the reason it does not."""
    if not cfg.get("num_experts"):
        return "the model has no MoE layer (dense)"
    if cfg.get("use_blockffn"):
        if cfg.get("router_act_func", "relu") != "relu":
            return f"router_act_func {cfg.get('router_act_func')!r} is not relu"
        return None
    rt = cfg.get("router_type", "topk")
    if rt == "remoe":
        return None
    why = {"topk": "top-k activates exactly moe_router_topk experts per token",
           "topp": "TopP activates the shortest prefix holding moe_router_topp of |logit| mass"}
    return (f"router_type {rt!r} is not a ReLU router ({why.get(rt, 'unknown router')}), so "
            f"there is no activation ratio to calibrate")


def dc_vector(rng, H):
    u = rng.standard_normal(H)
    return (u / np.linalg.norm(u) * math.sqrt(H) * DC_RMS).astype(np.float32)


# ---------------------------------------------------------------- forward pieces (float32)

def rms(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + np.float32(eps)) * w


def silu(z):
    return z / (np.float32(1) + np.exp(-z))


class Model:
    def __init__(self, cfg, get, pattern):
        """get(name) -> float32 array (stored-dtype values)."""
        self.c, self.get, self.pattern = cfg, get, pattern
        self.H = cfg["hidden_size"]
        self.n_h, self.n_g = cfg["num_attention_heads"], cfg["num_query_groups"]
        self.hd = self.H // self.n_h
        self.eps = float(cfg.get("norm_epsilon", 1e-5))
        self.E, self.d = cfg.get("num_experts") or 0, cfg.get("moe_ffn_hidden_size") or 0
        self.S = cfg.get("moe_shared_expert_intermediate_size") or 0
        self.blockffn = bool(cfg.get("use_blockffn"))
        self.gated = not cfg.get("expert_not_gated", False)
        theta = float(cfg.get("rope_theta", 10000.0))
        self.inv_freq = (np.float32(1) / np.float32(theta) ** (
            np.arange(0, self.hd, 2, dtype=np.float32) / np.float32(self.hd))).astype(np.float32)
        self.cache = {}

    def rope(self, z):  # [B, T, heads, hd]
        T = z.shape[1]
        ang = np.arange(T, dtype=np.float32)[:, None] * self.inv_freq[None]
        cos = np.concatenate([np.cos(ang)] * 2, -1)[None, :, None, :]
        sin = np.concatenate([np.sin(ang)] * 2, -1)[None, :, None, :]
        h = self.hd // 2
        return z * cos + np.concatenate([-z[..., h:], z[..., :h]], -1) * sin

    def attention(self, a, p):  # a [B, T, H]
        B, T, _ = a.shape
        g = self.get
        q = (a @ g(f"{p}.q_proj.weight").T).reshape(B, T, self.n_h, self.hd)
        k = (a @ g(f"{p}.k_proj.weight").T).reshape(B, T, self.n_g, self.hd)
        v = (a @ g(f"{p}.v_proj.weight").T).reshape(B, T, self.n_g, self.hd)
        q, k = self.rope(q), self.rope(k)
        rep = self.n_h // self.n_g
        k, v = np.repeat(k, rep, axis=2), np.repeat(v, rep, axis=2)
        s = np.einsum("bthd,bshd->bhts", q, k) / np.float32(math.sqrt(self.hd))
        s = np.where(np.tril(np.ones((T, T), dtype=bool)), s, np.float32(-np.inf))
        s = np.exp(s - s.max(-1, keepdims=True))
        s /= s.sum(-1, keepdims=True)
        o = np.einsum("bhts,bshd->bthd", s, v).reshape(B, T, self.n_h * self.hd)
        return o @ g(f"{p}.o_proj.weight").T

    def swiglu(self, m, p):
        g = self.get
        return (silu(m @ g(f"{p}.gate_proj.weight").T) * (m @ g(f"{p}.up_proj.weight").T)) \
            @ g(f"{p}.down_proj.weight").T

    # --- routing: activity exactly as spec §3.3 step 3 / §4.3

    def bias_of(self, m):
        return self.get(f"{m}.expert_bias") if self.blockffn and self.c.get(
            "moe_router_enable_expert_bias") else None

    def active(self, l, bias, clamp=True):
        """[N, E] bool."""
        act = l > 0
        if bias is not None:
            if self.c.get("moe_expert_bias_apply_method", "base") == "rms":
                s = l + bias * np.sqrt(np.mean(l * l, -1, keepdims=True))
            else:
                s = l + bias
            act &= s > 0
        ratio = float(self.c.get("router_clamp_act_ratio", 1.0) or 1.0)
        if clamp and not self.blockffn and 0 < ratio < 1:
            K = int(math.floor(ratio * self.E))
            r = np.where(act, l, 0)
            keep = np.zeros_like(act)
            np.put_along_axis(keep, np.argsort(-r, axis=-1, kind="stable")[:, :K], True, -1)
            act &= keep
        return act

    def weights(self, l, act, m):
        """Per-(token, expert) factor of the expert's output (§3.3 step 4, §4.3)."""
        r = np.where(act, l, np.float32(0)).astype(np.float32)
        if not self.blockffn:
            return r
        c, eps = self.c, np.float32(self.eps)
        t = c.get("router_norm_type", "simple")
        w = np.float32(c.get("router_norm_init_var", 0.1)) if c.get("router_norm_fixed") \
            else self.get(f"{m}.router_norm.weight")
        if t == "simple":
            return r * w
        if t == "rms":
            return r / np.sqrt(np.mean(r * r, -1, keepdims=True) + eps) * w
        if t == "normal":
            rc = r - r.mean(-1, keepdims=True)
            return rc / np.sqrt(np.mean(rc * rc, -1, keepdims=True) + eps) * w
        return r  # "null"

    def router_name(self, m):
        return f"{m}.moe_router.weight" if self.blockffn else f"{m}.router.weight"

    # --- experts

    def experts(self, x, gw, m):
        """Sum over (token, expert) pairs with a non-zero factor of factor * expert output."""
        N, E, d, H = x.shape[0], self.E, self.d, self.H
        y = np.zeros((N, H), dtype=np.float32)
        g = self.get
        if self.blockffn:
            key = (m, "blockffn")
            if key not in self.cache:
                up = g(f"{m}.expert_up_proj.weight").reshape(E, d, H)
                gate = g(f"{m}.expert_gate_proj.weight").reshape(E, d, H) if self.gated else None
                src = gate if self.gated else up
                down = np.ascontiguousarray(
                    g(f"{m}.expert_down_proj.weight").reshape(H, E, d).transpose(1, 0, 2))
                ubar = src.reshape(E * d, H).mean(0)  # NormSiLU mean over all E*d units = ubar·m
                gamma = g(f"{m}.expert_act.rms_norm.weight") if self.c.get(
                    "expert_act_func", "norm_silu") in ("norm_silu", "norm_silu_nomean") else None
                self.cache = {key: (up, gate, src, down, ubar, gamma)}  # one layer at a time
            up, gate, src, down, ubar, gamma = self.cache[key]
            act_fn = self.c.get("expert_act_func", "norm_silu")
            mean = x @ ubar if act_fn in ("norm_silu", "norm_silu_norms") else None
            for e in range(E):
                idx = np.nonzero(gw[:, e])[0]
                if idx.size == 0:
                    continue
                xe = x[idx]
                v = xe @ src[e].T
                if act_fn == "silu":
                    h = silu(v)
                else:
                    if mean is not None:
                        v = v - mean[idx, None]
                    if act_fn == "norm_silu_norms":
                        h = silu(v)
                    else:
                        h = silu(v / np.sqrt(np.mean(v * v, -1, keepdims=True)
                                             + np.float32(self.eps)) * gamma)
                if self.gated:
                    h = h * (xe @ up[e].T)
                y[idx] += (gw[idx, e, None] * h) @ down[e].T
            return y
        up, down = g(f"{m}.experts.up_proj.weight"), g(f"{m}.experts.down_proj.weight")
        gate = g(f"{m}.experts.gate_proj.weight") if self.gated else None
        for e in range(E):
            idx = np.nonzero(gw[:, e])[0]
            if idx.size == 0:
                continue
            xe = x[idx]
            h = silu(xe @ gate[e].T) * (xe @ up[e].T) if self.gated else silu(xe @ up[e].T)
            y[idx] += (gw[idx, e, None] * h) @ down[e].T
        return y


# ---------------------------------------------------------------- calibration

def solve_shift(l, s, bias, model, target, iters=60):
    """Per-expert a_e such that mean_t active(l + a s)[:, e] = target (bisection, all experts at
    once; activity is increasing in a_e where s_t > 0, which the DC component makes ~all t)."""
    scale = float(np.abs(l).max() / max(np.abs(s).mean(), 1e-12)) * 4 + 1.0
    lo = np.full(l.shape[1], -scale)
    hi = np.full(l.shape[1], scale)
    for _ in range(iters):
        mid = (lo + hi) / 2
        frac = model.active((l + mid[None, :] * s[:, None]).astype(np.float32), bias,
                            clamp=False).mean(0)
        up = frac < target
        lo = np.where(up, mid, lo)
        hi = np.where(up, hi, mid)
    return (lo + hi) / 2


def forward(model, tokens, embed, router_hook=None, log=None):
    """tokens [B, T] int. router_hook(layer, m_name, M) -> None or a new router weight (stored
    dtype values) to use from now on. -> per-MoE-layer dict of measurements."""
    B, T = tokens.shape
    H, eps = model.H, model.eps
    x = embed[tokens].astype(np.float32)
    stats = []
    for i, moe in enumerate(model.pattern):
        t0 = time.time()
        p = f"model.layers.{i}"
        x = x + model.attention(rms(x, model.get(f"{p}.input_layernorm.weight"), eps),
                                f"{p}.self_attn")
        mflat = rms(x, model.get(f"{p}.post_attention_layernorm.weight"), eps).reshape(B * T, H)
        if not moe:
            x = x + model.swiglu(mflat, f"{p}.mlp").reshape(B, T, H)
            continue
        m = f"{p}.mlp"
        bias = model.bias_of(m)
        st = {"layer": i}
        if router_hook is not None:
            l0 = mflat @ model.get(model.router_name(m)).T
            st["before"] = float(model.active(l0, bias).mean())
            router_hook(i, m, mflat, l0, bias, st)
        l = mflat @ model.get(model.router_name(m)).T
        act = model.active(l, bias)
        st["ratio"] = float(act.mean())
        st["per_expert"] = act.mean(0)
        st["per_position"] = act.reshape(B, T, -1).mean(axis=(0, 2))
        # spread of an expert's ratio between sequences (mean over experts of the std)
        st["sequence_expert_std"] = float(act.reshape(B, T, -1).mean(axis=1).std(0).mean())
        stats.append(st)
        y = model.experts(mflat, model.weights(l, act, m), m)
        if model.S > 0:
            y = y + model.swiglu(mflat, f"{m}.shared_experts")
        x = x + y.reshape(B, T, H)
        if log:
            log(f"layer {i}: ratio {st['ratio']:.4f}"
                + (f" (before {st['before']:.4f})" if "before" in st else "")
                + f" [{time.time() - t0:.1f}s]")
    return stats


def sequences(rng, vocab, n_tokens, T):
    n = max(1, int(math.ceil(n_tokens / T)))
    tok = rng.integers(3, vocab, size=(n, T))
    tok[:, 0] = 1  # BOS, as every prompt starts
    return tok


def calibrate(cfg, pattern, get, set_router, embed, target, cal_tokens, cal_rng, held_rng,
              cal_len, held_tokens, held_len, log=print):
    """Calibrate the routers in place (set_router(name, float32 array) stores the stored-dtype
    values, get() returns them afterwards). embed: [V, H] float32 stored values (with the DC
    component). -> report dict."""
    model = Model(cfg, get, pattern)
    V = embed.shape[0]
    cal = sequences(cal_rng, V, cal_tokens, cal_len)
    held = sequences(held_rng, V, held_tokens, held_len)

    def hook(i, m, M, l, bias, st):
        b = M.astype(np.float64).mean(0)
        if not np.linalg.norm(b) > 0:
            raise CalibrationError(f"layer {i}: router inputs have no mean direction")
        s64 = M.astype(np.float64) @ (b / np.linalg.norm(b))
        st["direction_mean_over_std"] = float(s64.mean() / (s64.std() + 1e-30))
        l64 = l.astype(np.float64)
        seq = np.repeat(np.arange(cal.shape[0]), cal.shape[1])
        t_in = target
        if cal.shape[0] >= 3:
            # Leave-one-sequence-out estimate of the out-of-sample ratio: a_e fitted to a few
            # sequences is noisy, and since the ratio is curved in a_e (convex below 0.5), new
            # tokens land off the target on average (above it for R < 0.5). Move the
            # in-sample target by the estimated excess, scaled to the full sample ((K-1)/K).
            K = cal.shape[0]
            out = []
            for k in range(K):
                tr = seq != k
                ak = solve_shift(l64[tr], s64[tr], bias, model, target)
                out.append(model.active((l64[~tr] + ak[None, :] * s64[~tr, None])
                                        .astype(np.float32), bias, clamp=False).mean())
            excess = float(np.mean(out)) - target
            t_in = float(np.clip(target - excess * (K - 1) / K, target / 2, (1 + target) / 2))
        st["in_sample_target"] = t_in
        a = solve_shift(l64, s64, bias, model, t_in)
        name = model.router_name(m)
        w = get(name).astype(np.float64) + a[:, None] * (b / np.linalg.norm(b))[None, :]
        set_router(name, w.astype(np.float32))

    t0 = time.time()
    log(f"calibration: {cal.shape[0]} sequences x {cal.shape[1]} tokens, target {target}")
    cs = forward(model, cal, embed, router_hook=hook, log=log)
    t1 = time.time()
    log(f"held-out: {held.shape[0]} sequences x {held.shape[1]} tokens")
    hs = forward(model, held, embed)
    t2 = time.time()

    def summary(stats, tok):
        return {
            "sequences": int(tok.shape[0]), "tokens_per_sequence": int(tok.shape[1]),
            "mean_ratio": float(np.mean([s["ratio"] for s in stats])),
            "per_layer": {str(s["layer"]): round(s["ratio"], 5) for s in stats},
            "per_expert_min_max": [float(min(s["per_expert"].min() for s in stats)),
                                   float(max(s["per_expert"].max() for s in stats))],
            # mean over layers of the ratio in 4 equal position ranges (first .. last quarter)
            "per_position_quarter": [
                round(float(np.mean([s["per_position"][q].mean() for s in stats])), 4)
                for q in np.array_split(np.arange(tok.shape[1]), 4)],
        }
    rep = {
        "target_activation": target,
        "method": "embedding DC component + per-expert router-row shift along the mean router "
                  "input, solved layer by layer on calibration sequences "
                  "(tools/py/activation_calibration.py)",
        "dc_rms": DC_RMS,
        "activity": "spec deco.md §3.3 step 3 (l_e > 0, and s_e > 0 with expert bias); "
                    "§4.3 with the clamp for ReMoE",
        "calibration": summary(cs, cal),
        "held_out": summary(hs, held),
        # ratio of the layer's random router on the calibration tokens (DC component and earlier
        # layers already in place), before its rows were shifted
        "before_shift_per_layer": {str(s["layer"]): round(s["before"], 5) for s in cs},
        "in_sample_target_per_layer": {str(s["layer"]): round(s["in_sample_target"], 5)
                                       for s in cs},
        "held_out_sequence_expert_std": {str(s["layer"]): round(s["sequence_expert_std"], 4)
                                         for s in hs},
        "direction_mean_over_std": {str(s["layer"]): round(s["direction_mean_over_std"], 3)
                                    for s in cs},
        "seconds": {"calibration": round(t1 - t0, 2), "held_out": round(t2 - t1, 2)},
    }
    return rep
