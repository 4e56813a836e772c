#!/usr/bin/python3
"""Capacity planner for sparse MoE models, after Liew et al., arXiv 2601.08215 (design principle).

Mode 1 sizes an existing model on a device: weight footprint per dtype, KV bytes per token and
how many sequences of a context fit in the memory left, bytes read per decoded token and the
bandwidth-bound decode speed, and the weight bytes one step reads at batch B.

  capacity_planner.py --model DIR [--device agx-orin-64 | --mem GiB --bw GB/s] [--ctx 4096] [--batch 8]
  capacity_planner.py --shape 0.5B --device l4 --json          # DECO's published sizes (spec §6)

Mode 2 recommends a shape for a device and a target, by the paper's principle: maximise
N_total (ties within 3 %), then minimise s = n_exp / n_topk, then the number of experts. Grid:
L 12..64, d 1024..8192 step 256 with 32 <= d/L <= 160, n_exp 8..256, d_exp = g d with g 1/4..2,
SwiGLU experts, GQA with head size 128; memory bounds N_total, --tps bounds the bytes per token.

  capacity_planner.py --recommend --device agx-orin-64 --wbits 4.5 --ctx 8192 --tps 20 --top 3

Units: memory in GiB (2^30 bytes), bandwidth and traffic in GB (10^9 bytes), as spec sheets
state them. Decode at small batch is bandwidth bound: tok/s <= bandwidth * eff / bytes per token,
an upper bound (attention compute and kernel efficiency are not modelled; calibrate eff).
Exit status: 0 ok, 2 usage error or unreadable model ("error: ..." on stderr).
"""
import argparse
import json
import math
import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "py"))
import safetensors_io as st  # noqa: E402

GIB = 2**30
GB = 1e9

# Nominal memory and peak DRAM bandwidth from the vendors' public spec sheets: NVIDIA Jetson AGX
# Orin and Orin NX/Nano series data sheets; NVIDIA A100, H100 (SXM5), H200, L4 product data
# sheets; GeForce RTX 4090 specifications. reserve_gib is ours: on Jetson the OS and the CUDA
# runtime share the same memory; on a GPU, the CUDA context and allocator slack.
DEVICES = {
    "agx-orin-64": dict(label="Jetson AGX Orin 64GB", mem_gib=64, bw_gbs=204.8, reserve_gib=4),
    "agx-orin-32": dict(label="Jetson AGX Orin 32GB", mem_gib=32, bw_gbs=204.8, reserve_gib=4),
    "orin-nx-16": dict(label="Jetson Orin NX 16GB", mem_gib=16, bw_gbs=102.4, reserve_gib=3),
    "orin-nano-8": dict(label="Jetson Orin Nano 8GB", mem_gib=8, bw_gbs=68.0, reserve_gib=2),
    "a100-80": dict(label="NVIDIA A100 80GB SXM", mem_gib=80, bw_gbs=2039, reserve_gib=1),
    "h100-sxm": dict(label="NVIDIA H100 SXM 80GB", mem_gib=80, bw_gbs=3350, reserve_gib=1),
    "h200": dict(label="NVIDIA H200 141GB", mem_gib=141, bw_gbs=4800, reserve_gib=1),
    "l4": dict(label="NVIDIA L4 24GB", mem_gib=24, bw_gbs=300, reserve_gib=1),
    "rtx4090": dict(label="GeForce RTX 4090 24GB", mem_gib=24, bw_gbs=1008, reserve_gib=1),
}
ALIASES = {"orin64": "agx-orin-64", "orin32": "agx-orin-32", "orin-nx": "orin-nx-16", "a100": "a100-80",
           "h100": "h100-sxm", "4090": "rtx4090"}

# DECO's published sizes (spec deco.md §6): vocab 73448, head dim 128, untied, layer 0 dense,
# others DECO layers, shared expert 128, non-gated experts with NormSiLU, simple router norm.
DECO_SHAPES = {  # layers, hidden, heads (= KV groups), dense FFN, E, d
    "0.1B": (16, 768, 6, 1920, 42, 64), "0.2B": (20, 1024, 8, 2560, 57, 64),
    "0.5B": (27, 1280, 10, 3360, 77, 64), "1.2B": (32, 1792, 14, 4480, 102, 64),
}
DTYPES = ("f32", "bf16", "f16", "int8")
KV_BYTES = {"f32": 4, "bf16": 2, "f16": 2, "int8": 1}  # moeserve: bf16, or f32 for f32 compute (model.kv_dtype)
DECO_DEFAULT_ACTIVATION = 0.2   # router_target_act_ratio of DECO's training (spec §5)
SOFTMOE_AE_FACTOR = 1.15        # Infer-AE ~ 1.15 k_l without a measurement (our rough factor)


class PlanError(Exception):
    pass


# ---- model description: a list of tensors with a role ---------------------------------------
# role: "embed" (one row read per token), "head" (read whole per token), "dense" (read whole:
# attention, norms, routers, dense FFNs, shared experts), "expert" (routed: a fraction is read).

def T(name, shape, role="dense", moe=None):
    return {"name": name, "shape": list(shape), "role": role, "moe": moe}


def deco_config(size):
    L, H, heads, F, E, d = DECO_SHAPES[size]
    return {"num_layers": L, "hidden_size": H, "num_attention_heads": heads, "num_query_groups": heads,
            "ffn_hidden_size": F, "num_experts": E, "moe_ffn_hidden_size": d,
            "moe_shared_expert_intermediate_size": 128, "moe_layer_freq": [0] + [1] * (L - 1),
            "use_blockffn": True, "router_norm_type": "simple", "expert_act_func": "norm_silu",
            "expert_not_gated": True, "vocab_size": 73448, "max_position_embeddings": 4096,
            "tie_word_embeddings": False, "model_type": "blockffn"}


def get(c, key, fallback=None, default=None):
    """Megatron key first, HF key as a fallback (spec §1.1); null counts as absent."""
    for k in (key, fallback):
        if k and c.get(k) is not None:
            return c[k]
    return default


def moe_pattern(c, L):
    if c.get("num_experts") is None:
        return [0] * L
    f = c.get("moe_layer_freq", 1)
    f = 1 if f is None else f
    if isinstance(f, list):
        if len(f) != L:
            raise PlanError(f"moe_layer_freq has {len(f)} entries for {L} layers")
        return [int(bool(x)) for x in f]
    return [int(i % int(f) == 0) for i in range(L)]


def is_softmoe(c):
    return c.get("model_type") == "softmoe" or "SoftMoEForCausalLM" in (c.get("architectures") or [])


def router_kind(c):
    if c.get("num_experts") is None:
        return "dense"
    if is_softmoe(c):
        return "softmoe"
    return "deco" if c.get("use_blockffn") else str(c.get("router_type", "topk"))


def shape_of(c):
    """Trunk numbers both model families share."""
    L = int(get(c, "num_layers", "num_hidden_layers"))
    H = int(c["hidden_size"])
    n_h = int(c["num_attention_heads"])
    n_g = int(get(c, "num_query_groups", None if is_softmoe(c) else "num_key_value_heads", n_h))
    return dict(L=L, H=H, n_h=n_h, n_g=n_g, hd=H // n_h, V=int(c.get("vocab_size") or 0),
                pattern=moe_pattern(c, L), E=c.get("num_experts"), d=c.get("moe_ffn_hidden_size"))


def tensors_from_config(c):
    """The tensor set of deco.md §1.2 or softmoe.md §7.2.2, from config.json alone."""
    s = shape_of(c)
    L, H, n_h, n_g, hd, V, E, d = s["L"], s["H"], s["n_h"], s["n_g"], s["hd"], s["V"], s["E"], s["d"]
    soft = is_softmoe(c)
    ln = soft and c.get("norm_type") == "layernorm"
    lin_b = soft and bool(c.get("add_bias_linear"))
    qkv_b = lin_b or (soft and bool(c.get("add_qkv_bias")))
    # Experts: SoftMoE's expert_activation, DECO's expert_not_gated. Dense FFNs: SoftMoE's
    # activation again; DECO's dense layers and shared experts are always SwiGLU.
    swiglu = c.get("expert_activation") == "swiglu"
    expert_gated = swiglu if soft else not c.get("expert_not_gated", False)
    dense_gated = swiglu if soft else True
    out = [T("model.embed_tokens.weight", (V, H), "embed")]
    if soft and c.get("position_embedding_type") == "learned_absolute":
        out.append(T("model.embed_positions.weight", (c["max_position_embeddings"], H), "embed"))

    def norm(p):
        out.append(T(p + ".weight", (H,)))
        if ln:
            out.append(T(p + ".bias", (H,)))

    def ffn(p, width, gated, role="dense", moe=None, lead=()):
        # gate/up [.., width, H], down [.., H, width]; biases with add_bias_linear (SoftMoE only)
        names = ["gate_proj", "up_proj"] if gated else ["up_proj"]
        for n in names:
            out.append(T(f"{p}.{n}.weight", lead + (width, H), role, moe))
            if lin_b:
                out.append(T(f"{p}.{n}.bias", lead + (width,), role, moe))
        out.append(T(f"{p}.down_proj.weight", lead + (H, width), role, moe))
        if lin_b:
            out.append(T(f"{p}.down_proj.bias", lead + (H,), role, moe))

    j = 0
    for i in range(L):
        p = f"model.layers.{i}"
        norm(p + ".input_layernorm")
        for n, rows in (("q", n_h * hd), ("k", n_g * hd), ("v", n_g * hd)):
            out.append(T(f"{p}.self_attn.{n}_proj.weight", (rows, H)))
            if qkv_b:
                out.append(T(f"{p}.self_attn.{n}_proj.bias", (rows,)))
        out.append(T(f"{p}.self_attn.o_proj.weight", (H, n_h * hd)))
        if lin_b:
            out.append(T(f"{p}.self_attn.o_proj.bias", (H,)))
        norm(p + ".post_attention_layernorm")
        if not s["pattern"][i]:
            ffn(p + ".mlp", int(get(c, "ffn_hidden_size", "intermediate_size")), dense_gated)
            continue
        m = p + ".mlp"
        if soft:
            out.append(T(m + ".router.weight", (E, H)))
            ffn(m + ".experts", d, expert_gated, "expert", j, (E,))
        elif c.get("use_blockffn"):
            out.append(T(m + ".moe_router.weight", (E, H)))
            if not c.get("router_norm_fixed") and c.get("router_norm_type", "simple") not in (None, "null"):
                out.append(T(m + ".router_norm.weight", (1,) if c.get("router_norm_scalar") else (E,)))
            for n in (["expert_gate_proj", "expert_up_proj"] if expert_gated else ["expert_up_proj"]):
                out.append(T(f"{m}.{n}.weight", (E * d, H), "expert", j))
            out.append(T(m + ".expert_down_proj.weight", (H, E * d), "expert", j))
            if c.get("expert_act_func", "norm_silu") in ("norm_silu", "norm_silu_nomean"):
                out.append(T(m + ".expert_act.rms_norm.weight", (d,)))
            if c.get("moe_router_enable_expert_bias"):
                out.append(T(m + ".expert_bias", (E,)))
        else:
            out.append(T(m + ".router.weight", (E, H)))
            if c.get("moe_router_enable_expert_bias") and c.get("router_type", "topk") == "topk":
                out.append(T(m + ".router.expert_bias", (E,)))
            ffn(m + ".experts", d, expert_gated, "expert", j, (E,))
        S = 0 if soft else int(c.get("moe_shared_expert_intermediate_size") or 0)
        if S:
            ffn(m + ".shared_experts", S, True)
        j += 1
    norm("model.norm")
    tied = bool(c.get("tie_word_embeddings")) if soft else c.get("tie_word_embeddings") is True
    if not tied:
        out.append(T("lm_head.weight", (V, H), "head"))
    return out


def tensors_from_safetensors(model_dir):
    """Exact tensors from the validated header(s) (tools/py/safetensors_io.py); roles by name.
    None when there are no weights."""
    if not any(os.path.exists(os.path.join(model_dir, f)) for f in (st.INDEX_NAME, st.SINGLE_NAME)):
        return None, {}
    try:
        headers = st.read_model_headers(model_dir)
    except st.SafetensorsError as e:
        raise PlanError(f"{model_dir}: not a readable safetensors checkpoint ({e})")
    out, raw = [], {}
    for name, (fname, _, shape) in headers.items():
        mo = re.match(r"model\.layers\.(\d+)\.", name)
        if name in ("model.embed_tokens.weight", "model.embed_positions.weight"):
            role = "embed"
        elif name == "lm_head.weight":
            role = "head"
        elif re.search(r"\.mlp\.(expert_(up|gate|down)_proj|experts)\.", name):
            role = "expert"
        else:
            role = "dense"
        out.append(T(name, list(shape), role, int(mo.group(1)) if mo and role == "expert" else None))
        raw[name] = os.path.join(model_dir, fname)
    # Expert tensors carry the layer index; renumber as MoE ordinals j.
    layers = sorted({t["moe"] for t in out if t["role"] == "expert"})
    for t in out:
        if t["role"] == "expert":
            t["moe"] = layers.index(t["moe"])
    return out, raw


def read_vector(raw, name):
    """A small tensor's values as floats."""
    try:
        return [float(x) for x in st.load_file(raw[name], names={name})[name].ravel()]
    except st.SafetensorsError as e:
        raise PlanError(f"{name}: {e}")


def softmoe_k(c, raw, Lm):
    """k_l per MoE layer (softmoe.md §7.2.1): the list (or number), else 1 + (K - L_m) softmax(eta)."""
    k = c.get("moe_router_k_per_layer")
    if k is not None:
        return [float(x) for x in k] if isinstance(k, list) else [float(k)] * Lm
    eta = c.get("moe_router_budget_eta")
    if eta is None and "model.moe_budget.eta" in raw:
        eta = read_vector(raw, "model.moe_budget.eta")
    K = c.get("moe_router_budget")
    if eta is None or K is None:
        raise PlanError("softmoe config: neither moe_router_k_per_layer nor eta with moe_router_budget")
    mx = max(eta)
    w = [math.exp(x - mx) for x in eta]
    return [1 + (K - Lm) * x / sum(w) for x in w]


# ---- the accounting ------------------------------------------------------------------------

def numel(shape):
    return math.prod(shape) if shape else 1


def tensor_bytes(t, dtype):
    """int8: matrices as int8 with one f32 scale per output channel (row); vectors stay bf16."""
    n = numel(t["shape"])
    if dtype == "f32":
        return 4 * n
    if dtype in ("bf16", "f16"):
        return 2 * n
    if dtype == "int8":
        return n + 4 * numel(t["shape"][:-1]) if len(t["shape"]) >= 2 else 2 * n
    raise PlanError(f"unknown dtype {dtype}")


def kv_bytes_per_token(L, n_g, hd, kv_dtype):
    """K and V, every layer, every KV head: 2 * L * n_g * h_d * bytes."""
    return 2 * L * n_g * hd * KV_BYTES[kv_dtype]


def union_fraction(ratio, batch):
    """Expected fraction of a layer's experts touched by `batch` tokens, each choosing a fraction
    `ratio` independently: 1 - (1 - ratio)^B (n_exp (1 - (1 - 1/s)^B) experts)."""
    return 1.0 - (1.0 - ratio) ** batch


def traffic(tensors, ratios, dtype, batch):
    """Weight bytes read by one decode step of `batch` tokens (embedding rows per token)."""
    total = 0.0
    for t in tensors:
        b = tensor_bytes(t, dtype)
        if t["role"] == "embed":
            total += batch * b / t["shape"][0]
        elif t["role"] == "expert":
            total += b * union_fraction(ratios[t["moe"]], batch)
        else:
            total += b
    return total


def decode_tps(bw_gbs, eff, bytes_per_token):
    """Bandwidth bound: bw * eff / bytes."""
    return bw_gbs * GB * eff / bytes_per_token if bytes_per_token > 0 else float("inf")


def resolve_device(a):
    dev = {"label": "custom", "mem_gib": None, "bw_gbs": None, "reserve_gib": 1.0}
    if a.device:
        key = ALIASES.get(a.device.lower(), a.device.lower())
        if key not in DEVICES:
            raise PlanError(f"unknown device '{a.device}' (known: {', '.join(DEVICES)})")
        dev = dict(DEVICES[key], name=key)
    if a.mem is not None:
        dev["mem_gib"] = a.mem
    if a.bw is not None:
        dev["bw_gbs"] = a.bw
    if a.reserve is not None:
        dev["reserve_gib"] = a.reserve
    return dev


def load_model(a):
    """-> (config, tensors, source, raw tensor index)."""
    if a.shape:
        c = deco_config(a.shape)
        return c, tensors_from_config(c), f"DECO-{a.shape} (spec deco.md §6 shapes)", {}
    cfg_path = os.path.join(a.model, "config.json")
    try:
        with open(cfg_path) as f:
            c = json.load(f)
    except FileNotFoundError:
        raise PlanError(f"{cfg_path}: not found (--model wants a checkpoint directory)")
    except (OSError, ValueError) as e:
        raise PlanError(f"{cfg_path}: not readable JSON ({e})")
    try:
        tensors, raw = (None, {}) if a.no_weights else tensors_from_safetensors(a.model)
        if tensors is not None:
            return c, tensors, f"{a.model} (safetensors header: exact)", raw
        return c, tensors_from_config(c), f"{a.model} (config.json: shapes of the spec)", {}
    except (KeyError, TypeError, ValueError) as e:
        raise PlanError(f"{cfg_path}: missing or bad key ({e})")


def activation(c, a, raw, n_moe):
    """Fraction of each MoE layer's routed-expert weights one token reads, and a note."""
    kind = router_kind(c)
    E = c.get("num_experts") or 1
    if kind == "softmoe":
        k = softmoe_k(c, raw, n_moe)
        ae = [SOFTMOE_AE_FACTOR * x for x in k]
        if a.infer_ae:
            ae = [float(x) for x in a.infer_ae.split(",")]
            ae = ae * n_moe if len(ae) == 1 else ae
            if len(ae) != n_moe:
                raise PlanError(f"--infer-ae: {len(ae)} values for {n_moe} MoE layers")
        gamma = float(c.get("moe_router_cap_coeff", 2.0))
        caps = [min(math.ceil(gamma * x), E) for x in k]
        note = "Infer-AE " + ("measured (--infer-ae)" if a.infer_ae else f"~ {SOFTMOE_AE_FACTOR} k_l (assumed)")
        return [min(x / E, 1.0) for x in ae], note, {"k_l": k, "infer_ae": ae, "cap_l": caps}
    if a.activation is not None:
        return [a.activation] * n_moe, "given (--activation)", {}
    if kind == "deco":
        if c.get("router_norm_type") == "normal":
            # moeserve evaluates every expert for this router norm (docs/architecture.md).
            return [1.0] * n_moe, "router_norm normal: moeserve evaluates every expert", {}
        return [DECO_DEFAULT_ACTIVATION] * n_moe, "DECO's training target", {}
    if kind == "topk":
        k = int(c.get("moe_router_topk", 2))
        return [k / E] * n_moe, f"top-{k} of {E}", {}
    if kind == "dense":
        return [], "dense model", {}
    return [DECO_DEFAULT_ACTIVATION] * n_moe, f"{DECO_DEFAULT_ACTIVATION} assumed for {kind} (use --activation)", {}


def plan_model(a):
    c, tensors, source, raw = load_model(a)
    s = shape_of(c)
    emb = next((t for t in tensors if t["name"] == "model.embed_tokens.weight"), None)
    if emb:
        s["V"] = emb["shape"][0]  # the embedding decides; DECO's vocab_size is stale (spec §1.1)
    dev = resolve_device(a)
    n_moe = sum(s["pattern"])
    ratios, note, extra = activation(c, a, raw, n_moe)
    ctx = a.ctx or int(c.get("max_position_embeddings") or 4096)
    count = lambda role: sum(numel(t["shape"]) for t in tensors if t["role"] == role)  # noqa: E731
    total = sum(numel(t["shape"]) for t in tensors)
    embed, head, expert = count("embed"), count("head"), count("expert")
    read_experts = sum(numel(t["shape"]) * ratios[t["moe"]] for t in tensors if t["role"] == "expert")
    active = total - embed - expert + read_experts
    kv_tok = kv_bytes_per_token(s["L"], s["n_g"], s["hd"], a.kv_dtype)
    kv_read = kv_tok * ctx  # the last token of a full context reads all of it
    rows = []
    for dt in ([a.dtype] if a.dtype != "all" else DTYPES):
        w = sum(tensor_bytes(t, dt) for t in tensors)
        w1 = traffic(tensors, ratios, dt, 1)
        b1 = w1 + kv_read
        bB = traffic(tensors, ratios, dt, a.batch)
        r = {"dtype": dt, "weights_bytes": w, "weight_bytes_per_token": w1, "bytes_per_token": b1,
             "weights_per_step_bytes": bB, "batch": a.batch}
        if dev["mem_gib"] is not None:
            left = dev["mem_gib"] * GIB - dev["reserve_gib"] * GIB - a.workspace * GIB - w
            r["kv_left_bytes"] = max(left, 0.0)
            r["fits"] = left > 0
            r["kv_tokens"] = int(max(left, 0) // kv_tok)
            r["sequences_at_ctx"] = int(r["kv_tokens"] // ctx)
            r["kv_memory_mb"] = int(max(left, 0) // 2**20)
        if dev["bw_gbs"] is not None:
            r["tok_s_batch1"] = decode_tps(dev["bw_gbs"], a.eff, b1)
            r["tok_s_batch"] = a.batch * decode_tps(dev["bw_gbs"], a.eff, bB + a.batch * kv_read)
        rows.append(r)
    return {
        "mode": "model", "source": source, "router": router_kind(c), "activation_note": note,
        "activation_per_layer": ratios, **extra,
        "shape": {k: s[k] for k in ("L", "H", "n_h", "n_g", "hd", "V", "E", "d")} | {"moe_layers": n_moe},
        "params": {"total": total, "non_embedding": total - embed - head, "embedding_and_head": embed + head,
                   "routed_experts": expert, "active_per_token": active},
        "kv_dtype": a.kv_dtype, "kv_bytes_per_token": kv_tok, "ctx": ctx,
        "device": dev, "eff": a.eff, "workspace_gib": a.workspace, "rows": rows,
    }


# ---- mode 2: recommend a shape -------------------------------------------------------------

def rank(cands, tol=0.03):
    """The paper's principle: N_total within tol of the best, then smallest s = n_exp / n_topk,
    then fewest experts, then larger N_total; the rest follow by N_total."""
    if not cands:
        return []
    best = max(c["n_total"] for c in cands)
    key = lambda c: (c["n_exp"] / c["n_topk"], c["n_exp"], -c["n_total"])  # noqa: E731
    pool = sorted((c for c in cands if c["n_total"] >= (1 - tol) * best), key=key)
    rest = sorted((c for c in cands if c["n_total"] < (1 - tol) * best), key=lambda c: -c["n_total"])
    return pool + rest


def shape_numbers(L, d, n_exp, n_topk, d_exp, V, gqa, hd):
    """N_total = L [2d^2 + 2 d d_kv + d n_exp + 3 n_exp d d_exp] + 2 V d (SwiGLU experts, untied),
    and the parameters one token reads (n_topk experts, one embedding row, the whole head)."""
    d_kv = max(1, (d // hd) // gqa) * hd
    per_layer = 2 * d * d + 2 * d * d_kv + d * n_exp + 2 * d  # attention, router, norms
    n_total = L * (per_layer + 3 * n_exp * d * d_exp) + 2 * V * d
    read = L * (per_layer + 3 * n_topk * d * d_exp) + V * d + d
    active = n_total - L * 3 * (n_exp - n_topk) * d * d_exp
    return n_total, active, read, d_kv


def recommend(a):
    dev = resolve_device(a)
    if dev["mem_gib"] is None:
        raise PlanError("--recommend needs --device or --mem")
    if a.tps and dev["bw_gbs"] is None:
        raise PlanError("--tps needs --device or --bw")
    bpp, kvb = a.wbits / 8, KV_BYTES[a.kv_dtype]
    ctx = a.ctx or 4096
    mem = (dev["mem_gib"] - dev["reserve_gib"] - a.workspace) * GIB
    budget = dev["bw_gbs"] * GB * a.eff / a.tps if a.tps else float("inf")  # bytes per token
    cands = []
    for L in range(12, 65):
        for d in range(1024, 8193, 256):
            if not 32 <= d / L <= 160:  # our aspect-ratio rail, not the paper's
                continue
            for n_exp in (8, 16, 32, 64, 128, 256):
                for g in (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0):
                    d_exp = int(g * d)
                    n_total, _, read0, d_kv = shape_numbers(L, d, n_exp, 0, d_exp, a.vocab, a.gqa, a.head_dim)
                    kv_tok = 2 * L * d_kv * kvb
                    if n_total * bpp + kv_tok * ctx * a.batch > mem:
                        continue
                    # Largest n_topk within the latency budget (a smaller k is always dominated);
                    # k <= 16 (the note's grid) and s >= 2 (ours: beyond that it is not sparse).
                    per_k = L * 3 * d * d_exp * bpp
                    room = budget - read0 * bpp - kv_tok * ctx
                    k = min(16, n_exp // 2, int(room // per_k) if room != float("inf") else 16)
                    if k < 1:
                        continue
                    n_total, active, read, _ = shape_numbers(L, d, n_exp, k, d_exp, a.vocab, a.gqa, a.head_dim)
                    cands.append({"L": L, "d": d, "n_exp": n_exp, "n_topk": k, "d_exp": d_exp, "n_total": n_total,
                                  "n_active": active, "read": read, "kv_tok": kv_tok})
    ranked = rank(cands)[: a.top]
    for c in ranked:
        c["s"] = c["n_exp"] / c["n_topk"]
        c["footprint_bytes"] = (c["n_total"] * bpp + c["kv_tok"] * ctx * a.batch
                                + (dev["reserve_gib"] + a.workspace) * GIB)
        c["bytes_per_token"] = c["read"] * bpp + c["kv_tok"] * ctx
        one_expert_all_layers = c["L"] * 3 * c["d"] * c["d_exp"]
        shared_read = c["read"] - c["n_topk"] * one_expert_all_layers  # attention, routers, head
        c["weights_per_step_bytes"] = (shared_read + c["n_exp"] * one_expert_all_layers
                                       * union_fraction(1 / c["s"], a.batch_report)) * bpp
        if dev["bw_gbs"] is not None:
            c["tok_s"] = decode_tps(dev["bw_gbs"], a.eff, c["bytes_per_token"])
            c["tok_s_full_bw"] = decode_tps(dev["bw_gbs"], 1.0, c["bytes_per_token"])
        del c["read"]
    return {"mode": "recommend", "device": dev, "wbits": a.wbits, "ctx": ctx, "batch": a.batch, "tps": a.tps,
            "eff": a.eff, "batch_report": a.batch_report, "feasible": len(cands), "top": ranked}


# ---- output --------------------------------------------------------------------------------

def M(n):
    return f"{n / 1e6:,.1f} M"


def print_model(r):
    s, p, dev = r["shape"], r["params"], r["device"]
    print(f"model: {r['source']}")
    print(f"  {r['router']} router; {s['L']} layers ({s['moe_layers']} MoE), hidden {s['H']}, heads {s['n_h']}"
          f" ({s['n_g']} KV, dim {s['hd']}), experts {s['E']} x {s['d']}, vocab {s['V']}")
    print(f"  parameters: total {M(p['total'])}, non-embedding {M(p['non_embedding'])}, routed experts "
          f"{M(p['routed_experts'])}, active per token {M(p['active_per_token'])}")
    ratios = r["activation_per_layer"]
    if ratios:
        print(f"  activation: mean {sum(ratios) / len(ratios):.3f} of routed expert weights per token "
              f"({r['activation_note']})")
    if "k_l" in r:
        print("  k_l " + " ".join(f"{x:.2f}" for x in r["k_l"]) + " | worst-case fan-out cap_l "
              + " ".join(map(str, r["cap_l"])))
    print(f"  KV cache: {r['kv_bytes_per_token']:,} B/token ({r['kv_dtype']}: 2 x {s['L']} layers x {s['n_g']}"
          f" KV heads x {s['hd']}); context {r['ctx']}")
    if dev["mem_gib"] is not None or dev["bw_gbs"] is not None:
        bw = f"{dev['bw_gbs']} GB/s x eff {r['eff']}" if dev["bw_gbs"] is not None else "bandwidth unknown"
        mem = f"{dev['mem_gib']} GiB" if dev["mem_gib"] is not None else "memory unknown"
        print(f"device: {dev['label']}: {mem}, {bw}, reserve {dev['reserve_gib']} GiB, "
              f"workspace {r['workspace_gib']} GiB")
    B = r["rows"][0]["batch"]
    print(f"per decoded token: w = weight bytes read, MB/token adds the KV of a {r['ctx']}-token context;"
          f" tok/s = bw x eff / bytes; B={B}: one step of {B} sequences (union of their experts)")
    head = f"{'dtype':<6}{'weights':>11}{'KV left':>11}{'KV tokens':>12}{'seqs@ctx':>10}" \
           f"{'w MB/tok':>10}{'MB/token':>10}" \
           f"{'tok/s B=1':>11}{f'MB/step B={B}':>14}{f'tok/s B={B}':>12}"
    print(head)
    for x in r["rows"]:
        na = lambda k, f: f(x[k]) if k in x else "-"  # noqa: E731
        print(f"{x['dtype']:<6}{x['weights_bytes'] / GIB:>7.2f} GiB"
              f"{na('kv_left_bytes', lambda v: f'{v / GIB:7.2f} GiB'):>11}{na('kv_tokens', lambda v: f'{v:,}'):>12}"
              f"{na('sequences_at_ctx', str):>10}{x['weight_bytes_per_token'] / 1e6:>10.1f}"
              f"{x['bytes_per_token'] / 1e6:>10.1f}"
              f"{na('tok_s_batch1', lambda v: f'{v:,.0f}'):>11}{x['weights_per_step_bytes'] / 1e6:>14.1f}"
              f"{na('tok_s_batch', lambda v: f'{v:,.0f}'):>12}")
    bf = next((x for x in r["rows"] if x["dtype"] == "bf16" and "kv_memory_mb" in x), None)
    if bf and bf["fits"]:
        print(f"moeserve at bf16: --set scheduler.kv_memory_mb={bf['kv_memory_mb']} uses the KV memory left")


def print_recommend(r):
    dev = r["device"]
    bw = f"{dev['bw_gbs']} GB/s x eff {r['eff']}" if dev["bw_gbs"] is not None else "bandwidth unknown"
    print(f"device: {dev['label']}: {dev['mem_gib']} GiB, {bw}, reserve "
          f"{dev['reserve_gib']} GiB; {r['wbits']} bits/weight, context {r['ctx']} x batch {r['batch']}"
          + (f", >= {r['tps']} tok/s" if r["tps"] else "") + f"; {r['feasible']:,} feasible shapes")
    if not r["top"]:
        print("no shape fits these constraints")
        return
    B = r["batch_report"]
    print(f"{'#':<3}{'N_total':>9}{'N_active':>10}{'n_exp/k (s)':>15}{'L x d':>12}{'d_exp':>7}{'footprint':>11}"
          f"{'GB/token':>10}{'tok/s':>8}{f'GB/step B={B}':>14}")
    for i, c in enumerate(r["top"], 1):
        tps = f"{c['tok_s']:.0f}" if "tok_s" in c else "-"
        print(f"{i:<3}{c['n_total'] / 1e9:>8.2f}B{c['n_active'] / 1e9:>9.2f}B"
              f"{c['n_exp']:>7}/{c['n_topk']} ({c['s']:.1f}){c['L']:>6} x {c['d']:<5}{c['d_exp']:>6}"
              f"{c['footprint_bytes'] / GIB:>7.1f} GiB{c['bytes_per_token'] / GB:>10.2f}{tps:>8}"
              f"{c['weights_per_step_bytes'] / GB:>14.2f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--model", help="checkpoint directory (config.json, optional model.safetensors)")
    src.add_argument("--shape", choices=sorted(DECO_SHAPES), help="a published DECO size (spec §6)")
    src.add_argument("--recommend", action="store_true", help="mode 2: rank MoE shapes for the device")
    src.add_argument("--list-devices", action="store_true")
    ap.add_argument("--device", help="preset: " + ", ".join(DEVICES))
    ap.add_argument("--mem", type=float, help="device memory, GiB (overrides the preset)")
    ap.add_argument("--bw", type=float, help="memory bandwidth, GB/s (overrides the preset)")
    ap.add_argument("--reserve", type=float, help="memory kept for OS/runtime, GiB (preset's default)")
    ap.add_argument("--workspace", type=float, default=0.5, help="activation workspace, GiB (default 0.5)")
    ap.add_argument("--eff", type=float, default=0.6, help="achievable fraction of peak bandwidth (default 0.6)")
    ap.add_argument("--ctx", type=int, help="context length (default: the model's max positions, or 4096)")
    ap.add_argument("--batch", type=int,
                    help="mode 1: batch for weights/step (default 8); mode 2: sequences in KV (default 1)")
    ap.add_argument("--kv-dtype", choices=sorted(KV_BYTES), default="bf16",
                    help="KV cache dtype (moeserve's default for bf16/f16/int8 compute: bf16; f32 compute: f32)")
    ap.add_argument("--dtype", choices=("all",) + DTYPES, default="all", help="mode 1: weight dtype(s) to report")
    ap.add_argument("--activation", type=float, help="mode 1: fraction of routed expert weights read per token")
    ap.add_argument("--infer-ae", help="mode 1, SoftMoE: measured mean active experts (one value or one per layer)")
    ap.add_argument("--no-weights", action="store_true", help="mode 1: ignore model.safetensors, use config.json")
    ap.add_argument("--wbits", type=float, default=16, help="mode 2: bits per weight (int8 ~ 8.5, int4 g128 ~ 4.5)")
    ap.add_argument("--tps", type=float, help="mode 2: target batch-1 decode tok/s")
    ap.add_argument("--top", type=int, default=3, help="mode 2: shapes to print")
    ap.add_argument("--batch-report", type=int, default=8, help="mode 2: batch for the weights/step column")
    ap.add_argument("--vocab", type=int, default=73448, help="mode 2: vocabulary (untied embeddings)")
    ap.add_argument("--gqa", type=int, default=4, help="mode 2: query heads per KV head")
    ap.add_argument("--head-dim", type=int, default=128, help="mode 2: head size")
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    a = ap.parse_args(argv)
    if a.batch is None:
        a.batch = 1 if a.recommend else 8
    try:
        if a.list_devices:
            r = {"devices": DEVICES}
            if not a.json:
                for k, v in DEVICES.items():
                    print(f"{k:<13}{v['label']:<24}{v['mem_gib']:>6} GiB{v['bw_gbs']:>9} GB/s"
                          f"  reserve {v['reserve_gib']} GiB")
                return 0
        elif a.recommend:
            r = recommend(a)
        elif a.model or a.shape:
            if a.batch < 1 or not 0 < a.eff <= 1 or (a.activation is not None and not 0 <= a.activation <= 1):
                raise PlanError("--batch >= 1, 0 < --eff <= 1 and 0 <= --activation <= 1")
            r = plan_model(a)
        else:
            raise PlanError("give --model DIR, --shape SIZE, --recommend or --list-devices")
    except PlanError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if a.json:
        json.dump(r, sys.stdout, indent=1)
        print()
    elif r.get("mode") == "model":
        print_model(r)
    elif r.get("mode") == "recommend":
        print_recommend(r)
    return 0


if __name__ == "__main__":
    sys.exit(main())
