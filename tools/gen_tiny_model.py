#!/usr/bin/python3
"""Deterministic random checkpoint in the DECO export layout (spec deco.md §1), or a SoftMoE
server checkpoint (spec softmoe.md §7.2) with --variant softmoe.

Writes DIR/config.json (Megatron keys + stale HF keys, like the upstream exporter),
DIR/model.safetensors (or K shards + index) and/or DIR/pytorch_model.bin, and optionally
DIR/tokenizer.model trained with spm_train on tools/data/tokenizer_corpus.txt.

SoftMoE: a single model.safetensors with exactly the §7.2.2 tensor set of the config. Defaults
follow the paper's GPT-2 trunk (layernorm, learned_absolute, gelu, add_bias_linear); every §7.2.1
key can be overridden with --set (norm_type, position_embedding_type, rotary_base,
expert_activation, add_bias_linear, add_qkv_bias, tie_word_embeddings, moe_layer_freq,
moe_router_k_per_layer, moe_router_lapsum_scale, ...). The per-layer k comes from
moe_router_k_per_layer (default), or η with K: --eta-config (keys) or --eta-tensor (tensor
model.moe_budget.eta); --k-crosscheck also writes the k list that η implies.

Example:
  gen_tiny_model.py --out /tmp/m --variant deco --size tiny --seed 1 --dtype bf16
  gen_tiny_model.py --out /tmp/m --variant deco --size tiny --set router_norm_type=rms
  gen_tiny_model.py --out /tmp/m --variant softmoe --set norm_type=rmsnorm \
      --set position_embedding_type=rope --set expert_activation=swiglu --eta-tensor
  gen_tiny_model.py --out /tmp/m --variant deco --size 0.1B --dtype bf16 --target-activation 0.2

--target-activation R (ReLU routers: DECO, BlockFFN-v1, ReMoE): random routers activate about
half of the experts, trained DECO about 20 %. With R the generator adds a constant random
component to the embedding rows and shifts every router row along its layer's mean router
input so that each expert is active on a fraction R of the calibration tokens, layer by layer,
measured by the checkpoint's own forward in the stored dtype (method:
tools/py/activation_calibration.py). Same tensors, shapes, dtypes and config.json as without it;
the realised per-layer / mean ratios on the calibration and on a held-out set are printed and
written to DIR/generation_report.json. Without the flag the output is unchanged.
"""
import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zlib

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "py"))
import activation_calibration as calib  # noqa: E402
import safetensors_io as st  # noqa: E402

CORPUS = os.path.join(HERE, "data", "tokenizer_corpus.txt")
REAL_VOCAB = 73448  # MiniCPM4 tokenizer; also the stale `vocab_size` of the base config

# Trunk shapes. tiny/small are ours (tiny has GQA: 4 heads, 2 KV groups); the others are
# spec §6. E/d/S describe DECO; baselines override E/d (and k) from BASELINE below.
SIZES = {
    "tiny": dict(num_layers=3, hidden_size=64, num_attention_heads=4, num_query_groups=2,
                 ffn_hidden_size=96, num_experts=8, moe_ffn_hidden_size=16,
                 moe_shared_expert_intermediate_size=32, vocab=320, max_position_embeddings=256),
    "small": dict(num_layers=4, hidden_size=128, num_attention_heads=4, num_query_groups=4,
                  ffn_hidden_size=256, num_experts=16, moe_ffn_hidden_size=32,
                  moe_shared_expert_intermediate_size=64, vocab=512, max_position_embeddings=512),
    "0.1B": dict(num_layers=16, hidden_size=768, num_attention_heads=6, num_query_groups=6,
                 ffn_hidden_size=1920, num_experts=42, moe_ffn_hidden_size=64,
                 moe_shared_expert_intermediate_size=128, vocab=REAL_VOCAB,
                 max_position_embeddings=4096),
    "0.2B": dict(num_layers=20, hidden_size=1024, num_attention_heads=8, num_query_groups=8,
                 ffn_hidden_size=2560, num_experts=57, moe_ffn_hidden_size=64,
                 moe_shared_expert_intermediate_size=128, vocab=REAL_VOCAB,
                 max_position_embeddings=4096),
    "0.5B": dict(num_layers=27, hidden_size=1280, num_attention_heads=10, num_query_groups=10,
                 ffn_hidden_size=3360, num_experts=77, moe_ffn_hidden_size=64,
                 moe_shared_expert_intermediate_size=128, vocab=REAL_VOCAB,
                 max_position_embeddings=4096),
    "1.2B": dict(num_layers=32, hidden_size=1792, num_attention_heads=14, num_query_groups=14,
                 ffn_hidden_size=4480, num_experts=102, moe_ffn_hidden_size=64,
                 moe_shared_expert_intermediate_size=128, vocab=REAL_VOCAB,
                 max_position_embeddings=4096),
}
# Baseline (E, d, k) per size (spec §6; k only for topk). tiny/small scaled down.
BASELINE = {
    "topk": {"tiny": (8, 16, 3), "small": (16, 32, 4), "0.1B": (44, 41, 9),
             "0.2B": (59, 41, 12), "0.5B": (79, 42, 16), "1.2B": (101, 43, 20)},
    "remoe": {"tiny": (8, 16, 0), "small": (16, 32, 0), "0.1B": (44, 61, 0),
              "0.2B": (59, 62, 0), "0.5B": (79, 64, 0), "1.2B": (102, 64, 0)},
    "topp": {"tiny": (8, 16, 0), "small": (16, 32, 0), "0.1B": (44, 61, 0),
             "0.2B": (59, 62, 0), "0.5B": (79, 63, 0), "1.2B": (102, 64, 0)},
}
VARIANTS = ["deco", "deco-gated", "blockffn-v1", "dense", "topk", "remoe", "topp", "softmoe"]
# SoftMoE experts per size: (n, F). The trunk (layers, hidden, heads, dense FFN width, vocab,
# positions) is the size's; experts are GELU/SwiGLU MLPs of width F, wider than DECO's blocks.
SOFTMOE_EXPERTS = {"tiny": (8, 16), "small": (16, 64), "0.1B": (32, 768), "0.2B": (32, 1024),
                   "0.5B": (32, 1280), "1.2B": (32, 1792)}

# argparse defaults of the Megatron fork (spec §1.1); the exporter writes all of them.
MEGATRON_DEFAULTS = dict(
    norm_epsilon=1e-5, use_blockffn=False, router_type="topk", router_act_func="relu",
    router_norm_type="simple", router_norm_fixed=False, router_norm_scalar=False,
    router_norm_init_var=0.1, expert_act_func="norm_silu", expert_act_norm_type="normal",
    expert_not_gated=False, moe_router_enable_expert_bias=False,
    moe_expert_bias_apply_method="base", moe_router_topk=2, moe_router_topp=0.5,
    moe_router_score_function="softmax", moe_router_pre_softmax=False,
    moe_router_topk_scaling_factor=None, use_mup=False,
)


def variant_keys(variant, size):
    """Config keys a real export of this run type would carry."""
    if variant in ("deco", "deco-gated", "blockffn-v1"):
        v = dict(use_blockffn=True, router_norm_type="simple", expert_act_func="norm_silu",
                 expert_not_gated=variant != "deco-gated")
        if variant == "blockffn-v1":  # §4.5
            v.update(router_norm_type="rms", router_norm_init_var=1.0, expert_act_func="silu")
        return v
    if variant == "dense":  # §4.1
        return dict(num_experts=None, moe_ffn_hidden_size=None,
                    moe_shared_expert_intermediate_size=None, moe_layer_freq=1)
    e, d, k = BASELINE[variant][size] if size in BASELINE[variant] else BASELINE[variant]["tiny"]
    v = dict(num_experts=e, moe_ffn_hidden_size=d, router_type=variant, expert_not_gated=True)
    if variant == "topk":  # §4.2 as run
        v.update(moe_router_topk=k, moe_router_score_function="sigmoid",
                 moe_router_enable_expert_bias=True, moe_expert_bias_apply_method="base",
                 moe_router_topk_scaling_factor=2.5, expert_not_gated=False)
    if variant == "topp":
        v.update(moe_router_topp=0.6)
    return v


def stale_divisor(n_h, n_g):
    """A plausible-but-wrong num_key_value_heads (divides n_h, differs from n_g)."""
    cands = [x for x in range(1, n_h + 1) if n_h % x == 0 and x != n_g]
    return 2 if 2 in cands else (cands[0] if cands else n_h * 2)


def build_config(variant, size, vocab, sets):
    base = dict(SIZES[size])
    base.pop("vocab")
    cfg = dict(base)
    cfg.update(MEGATRON_DEFAULTS)
    cfg.update(variant_keys(variant, size))
    cfg.update(sets)
    L = cfg["num_layers"]
    if "moe_layer_freq" not in cfg:  # layer 0 dense, others MoE; follows an overridden L
        cfg["moe_layer_freq"] = [0] + [1] * (L - 1)
    n_h, n_g = cfg["num_attention_heads"], cfg["num_query_groups"]
    # HF keys the exporter does not touch keep the MiniCPM4 base values (stale on purpose).
    hf = {
        "architectures": ["BlockFFNForCausalLM"],
        "model_type": "blockffn",
        "auto_map": {"AutoConfig": "configuration_blockffn.BlockFFNConfig",
                     "AutoModelForCausalLM": "modeling_blockffn.BlockFFNForCausalLM"},
        "num_hidden_layers": 32 if L != 32 else 24,
        "num_key_value_heads": stale_divisor(n_h, n_g),
        "intermediate_size": 10240 if cfg["ffn_hidden_size"] != 10240 else 8192,
        "vocab_size": REAL_VOCAB,
        "hidden_act": "silu",
        "initializer_range": 0.1,
        "rms_norm_eps": 1e-5,
        "scale_emb": 12, "dim_model_base": 256, "scale_depth": 1.4,  # muP, unused (use_mup false)
        "rope_theta": 10000.0,
        "rope_scaling": None,
        "bos_token_id": 1,
        "eos_token_id": [2, 73440] if vocab > 73440 else [2],
        "pad_token_id": 2,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "use_cache": True,
        "moe_router_dtype": "fp32",
        "transformers_version": "4.46.0",
    }
    for k, v in hf.items():
        cfg.setdefault(k, v)  # --set (already in cfg) wins, also over the stale HF keys
    check_config(cfg)
    return cfg


def check_config(c):
    def need(cond, msg):
        if not cond:
            sys.exit(f"gen_tiny_model: invalid config: {msg}")
    need(c["hidden_size"] % c["num_attention_heads"] == 0, "hidden_size % num_attention_heads")
    need(c["num_attention_heads"] % c["num_query_groups"] == 0, "heads % num_query_groups")
    freq = c["moe_layer_freq"]
    need(isinstance(freq, int) or len(freq) == c["num_layers"], "moe_layer_freq length")
    if c.get("num_experts") and not c["use_blockffn"] and c["router_type"] == "topk":
        post_softmax = (c["moe_router_score_function"] == "softmax"
                        and not c["moe_router_pre_softmax"])
        need(not (post_softmax and c["moe_router_enable_expert_bias"]),
             "expert bias is invalid with post-softmax top-k; "
             "add --set moe_router_enable_expert_bias=false")


def moe_pattern(c):
    L, freq = c["num_layers"], c["moe_layer_freq"]
    if not c.get("num_experts"):
        return [False] * L
    if isinstance(freq, int):
        return [i % freq == 0 for i in range(L)]
    return [bool(f) for f in freq]


# ---------------------------------------------------------------- tensors and init

def normal(std, mean=0.0):
    return lambda rng, shape: (rng.standard_normal(shape, dtype=np.float32) * np.float32(std)
                               + np.float32(mean))


def norm_weight(mean=1.0, rel=0.1):
    return normal(abs(mean) * rel, mean)


def scales_with_negatives(mean, rel=0.5, neg_frac=0.15):
    """Router-norm weights: around `mean`, a few of them negative (they are learned)."""
    def f(rng, shape):
        w = mean * (1 + rel * rng.standard_normal(shape)).astype(np.float32)
        if w.size >= 4:
            flip = rng.random(shape) < neg_frac
            flip.flat[int(rng.integers(w.size))] = True
            w[flip] = -w[flip]
        return w.astype(np.float32)
    return f


def expert_rows(E, d, H):
    """Expert up/gate rows: N(0,1/H) plus a per-expert and a global offset direction so
    the NormSiLU mean over all E*d units differs clearly from a per-expert mean."""
    def f(rng, shape):
        w = rng.standard_normal(shape, dtype=np.float32) / np.float32(math.sqrt(H))
        glob = rng.standard_normal(H).astype(np.float32) * np.float32(0.7 / math.sqrt(H))
        per = rng.standard_normal((E, H)).astype(np.float32) * np.float32(0.7 / math.sqrt(H))
        w.reshape(E, d, H)[...] += (glob + per)[:, None, :]
        return w
    return f


def routed_gain(c, E, k_active):
    """Scale of routed expert down projections so the routed branch's output is O(1).
    Rough: output ≈ sqrt(#active) * typical weight * 0.6 * gain."""
    if c["use_blockffn"]:
        t = c["router_norm_type"]
        w = abs(c["router_norm_init_var"]) if t in ("simple", "rms", "normal") else 1.0
        per = {"simple": 0.8 * w, "rms": 2.0 * w, "normal": 1.0 * w}.get(t, 0.8)
        n = E if t == "normal" else E / 2
        if not c["expert_not_gated"]:
            per *= 1.6  # act(z) * u is larger than act(u)
    elif c["router_type"] == "topk":
        sf = c["moe_router_topk_scaling_factor"] or 1.0
        n, per = k_active, sf / k_active
    elif c["router_type"] == "remoe":
        n, per = E / 2, 0.8
    else:  # topp: ~half the experts share ~0.65 of the mass
        n, per = E / 2, 0.65 / (E / 2)
    return 0.7 / (math.sqrt(max(n, 1)) * per * 0.6)


def tensor_specs(c, vocab, tied):
    """[(name, shape, init)] in export order; follows the config exactly (spec §1.2)."""
    H, n_h, n_g = c["hidden_size"], c["num_attention_heads"], c["num_query_groups"]
    hd, F = H // n_h, c["ffn_hidden_size"]
    E, d = c.get("num_experts") or 0, c.get("moe_ffn_hidden_size") or 0
    S = c.get("moe_shared_expert_intermediate_size") or 0
    gated = not c["expert_not_gated"]
    bias = c["moe_router_enable_expert_bias"]
    specs = [("model.embed_tokens.weight", (vocab, H), normal(1.0))]

    def swiglu(prefix, width):
        return [(f"{prefix}.gate_proj.weight", (width, H), normal(1 / math.sqrt(H))),
                (f"{prefix}.up_proj.weight", (width, H), normal(1 / math.sqrt(H))),
                (f"{prefix}.down_proj.weight", (H, width), normal(0.6 / math.sqrt(width)))]

    for i, moe in enumerate(moe_pattern(c)):
        p = f"model.layers.{i}"
        specs += [(f"{p}.input_layernorm.weight", (H,), norm_weight()),
                  (f"{p}.self_attn.q_proj.weight", (n_h * hd, H), normal(1 / math.sqrt(H))),
                  (f"{p}.self_attn.k_proj.weight", (n_g * hd, H), normal(1 / math.sqrt(H))),
                  (f"{p}.self_attn.v_proj.weight", (n_g * hd, H), normal(1 / math.sqrt(H))),
                  (f"{p}.self_attn.o_proj.weight", (H, n_h * hd), normal(1 / math.sqrt(n_h * hd))),
                  (f"{p}.post_attention_layernorm.weight", (H,), norm_weight())]
        if not moe:
            specs += swiglu(f"{p}.mlp", F)
            continue
        m = f"{p}.mlp"
        if c["use_blockffn"]:
            gain = routed_gain(c, E, 0)
            specs.append((f"{m}.moe_router.weight", (E, H), normal(1 / math.sqrt(H))))
            if not c["router_norm_fixed"]:
                iv = c["router_norm_init_var"]
                specs.append((f"{m}.router_norm.weight", (1,) if c["router_norm_scalar"] else (E,),
                              norm_weight(iv, 0.2) if c["router_norm_scalar"]
                              else scales_with_negatives(iv)))
            specs.append((f"{m}.expert_up_proj.weight", (E * d, H), expert_rows(E, d, H)))
            if gated:
                specs.append((f"{m}.expert_gate_proj.weight", (E * d, H), expert_rows(E, d, H)))
            specs.append((f"{m}.expert_down_proj.weight", (H, E * d),
                          normal(gain / math.sqrt(d))))
            if c["expert_act_func"] in ("norm_silu", "norm_silu_nomean"):
                specs.append((f"{m}.expert_act.rms_norm.weight", (d,), norm_weight()))
            if bias:
                specs.append((f"{m}.expert_bias", (E,), normal(0.3)))
        else:
            k = c["moe_router_topk"]
            gain = routed_gain(c, E, k)
            specs.append((f"{m}.router.weight", (E, H), normal(1 / math.sqrt(H))))
            if bias and c["router_type"] == "topk":
                specs.append((f"{m}.router.expert_bias", (E,), normal(0.1)))
            if gated:
                specs.append((f"{m}.experts.gate_proj.weight", (E, d, H), normal(1 / math.sqrt(H))))
            specs += [(f"{m}.experts.up_proj.weight", (E, d, H), normal(1 / math.sqrt(H))),
                      (f"{m}.experts.down_proj.weight", (E, H, d), normal(gain / math.sqrt(d)))]
        if S > 0:
            specs += swiglu(f"{m}.shared_experts", S)
    # Logits O(1-10): lm_head rows N(0, 2.5^2/H). Tied: shrink the final norm instead.
    specs.append(("model.norm.weight", (H,),
                  norm_weight(2.5 / math.sqrt(H)) if tied else norm_weight()))
    if not tied:
        specs.append(("lm_head.weight", (vocab, H), normal(2.5 / math.sqrt(H))))
    return specs


def stored_dtype(name, dtype):
    # expert_bias is an fp32 buffer in training; the exporter does not cast it. SoftMoE's η is
    # written as F32 by our converter (spec softmoe.md §7.2.2).
    return "F32" if name.endswith("expert_bias") or name == "model.moe_budget.eta" else dtype


def make_tensor(seed, name, shape, init):
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])  # order-independent
    return init(rng, shape).astype(np.float32, copy=False)


def stored_values(arr, dtype):
    """float32 array -> the float32 values it has once written in `dtype` (exact upcast)."""
    if dtype == "BF16":
        return st.bf16_bits_to_fp32(st.fp32_to_bf16_bits(arr))
    if dtype == "F16":
        return np.asarray(arr, np.float32).astype(np.float16).astype(np.float32)
    return np.asarray(arr, np.float32)


def calibrate_activation(a, cfg, specs, dtype):
    """--target-activation: -> {name: float32 stored values} for every tensor computed here
    (the changed embedding and routers, plus the unchanged ones it produced, so they are not
    generated twice; re-encoding stored values is exact). Writes generation_report.json."""
    why = calib.applicable(cfg)
    if why:
        sys.exit(f"gen_tiny_model: --target-activation does not apply: {why}")
    if not 0.0 < a.target_activation < 1.0:
        sys.exit("gen_tiny_model: --target-activation must be in (0, 1)")
    by_name = {n: (s, init) for n, s, init in specs}
    values = {}

    def get(name):
        if name not in values:
            shape, init = by_name[name]
            values[name] = stored_values(make_tensor(a.seed, name, shape, init),
                                         stored_dtype(name, dtype))
        return values[name]

    def set_router(name, arr):
        values[name] = stored_values(arr, stored_dtype(name, dtype))

    t0 = time.time()
    emb_name = "model.embed_tokens.weight"
    shape, init = by_name[emb_name]
    dc = calib.dc_vector(np.random.default_rng([a.seed, zlib.crc32(b"calibration.dc")]), shape[1])
    values[emb_name] = stored_values(make_tensor(a.seed, emb_name, shape, init) + dc[None, :],
                                     stored_dtype(emb_name, dtype))
    P = cfg["max_position_embeddings"]
    cal_len = min(a.calib_seq_len, P)
    held_len = cal_len
    log = (lambda msg: print(f"gen_tiny_model: {msg}", flush=True)) if a.verbose else (lambda m: None)
    rep = calib.calibrate(
        cfg, moe_pattern(cfg), get, set_router, values[emb_name], a.target_activation,
        a.calib_tokens, np.random.default_rng([a.seed, zlib.crc32(b"calibration.tokens")]),
        np.random.default_rng([a.seed, zlib.crc32(b"calibration.heldout")]), cal_len,
        a.heldout_tokens, held_len, log=log)
    rep["seed"], rep["dtype"], rep["variant"], rep["size"] = a.seed, dtype, a.variant, a.size
    rep["seconds"]["total"] = round(time.time() - t0, 2)
    with open(os.path.join(a.out, "generation_report.json"), "w") as f:
        json.dump(rep, f, indent=2)
        f.write("\n")
    c, h = rep["calibration"], rep["held_out"]
    fmt = lambda d: " ".join(f"{k}:{v:.3f}" for k, v in d.items())  # noqa: E731
    print(f"gen_tiny_model: target activation {a.target_activation}: realised mean ratio "
          f"{c['mean_ratio']:.4f} on calibration ({c['sequences']}x{c['tokens_per_sequence']} "
          f"tokens), {h['mean_ratio']:.4f} on held-out ({h['sequences']}x"
          f"{h['tokens_per_sequence']}); random routers before: "
          f"{np.mean(list(rep['before_shift_per_layer'].values())):.3f}")
    print(f"gen_tiny_model:   per layer (calibration) {fmt(c['per_layer'])}")
    print(f"gen_tiny_model:   per layer (held-out)    {fmt(h['per_layer'])}")
    return values


# ---------------------------------------------------------------- tokenizer

def train_tokenizer(out_dir, vocab, seed):
    """BPE SentencePiece on the repo corpus; -> number of pieces (the model's vocab).
    Runs in a scratch dir with relative paths: the model file embeds the trainer flags,
    so absolute paths would make the output depend on where it was generated."""
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copyfile(CORPUS, os.path.join(tmp, "corpus.txt"))
        cmd = ["spm_train", "--input=corpus.txt", "--model_prefix=tokenizer", "--model_type=bpe",
               f"--vocab_size={vocab}", "--hard_vocab_limit=false", "--byte_fallback=true",
               "--unk_id=0", "--bos_id=1", "--eos_id=2", "--pad_id=-1", "--num_threads=1",
               f"--random_seed={seed}", "--character_coverage=1.0", "--minloglevel=2"]
        r = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"gen_tiny_model: spm_train failed:\n{r.stderr[-2000:]}")
        shutil.copyfile(os.path.join(tmp, "tokenizer.model"),
                        os.path.join(out_dir, "tokenizer.model"))
        with open(os.path.join(tmp, "tokenizer.vocab"), encoding="utf-8") as f:
            return sum(1 for _ in f)


# ---------------------------------------------------------------- SoftMoE (softmoe.md §7.2)

def softmoe_pattern(c):
    L, freq = c["num_layers"], c.get("moe_layer_freq", 1)
    if isinstance(freq, int) and not isinstance(freq, bool):
        return [i % freq == 0 for i in range(L)]
    return [f == 1 for f in freq]


def softmoe_eta(seed, Lm):
    rng = np.random.default_rng([seed, zlib.crc32(b"model.moe_budget.eta")])
    return [float(v) for v in (rng.standard_normal(Lm) * 0.7).astype(np.float32)]


def k_from_eta(eta, K):
    """k_l = 1 + (K - L_m) softmax(eta)_l in float64 (spec §5, §7.2.1)."""
    e = np.asarray(eta, dtype=np.float64)
    p = np.exp(e - e.max())
    p /= p.sum()
    return [float(v) for v in 1.0 + (K - len(eta)) * p]


def build_softmoe_config(size, vocab, sets, tied, eta_mode, k_crosscheck, seed):
    """-> (config dict, eta values for the tensor or None)."""
    b = SIZES[size]
    n, F = SOFTMOE_EXPERTS[size]
    cfg = {
        "architectures": ["SoftMoEForCausalLM"], "model_type": "softmoe",
        "hidden_size": b["hidden_size"], "num_layers": b["num_layers"],
        "num_attention_heads": b["num_attention_heads"], "num_query_groups": b["num_query_groups"],
        "vocab_size": vocab, "max_position_embeddings": b["max_position_embeddings"],
        "norm_type": "layernorm", "norm_epsilon": 1e-5,
        "position_embedding_type": "learned_absolute",
        "add_qkv_bias": False, "add_bias_linear": True, "tie_word_embeddings": bool(tied),
        "num_experts": n, "moe_ffn_hidden_size": F, "expert_activation": "gelu",
        "moe_layer_freq": 1,
        "moe_router_lapsum_scale": 1.0, "moe_router_threshold_coeff": 1.8,
        "moe_router_cap_coeff": 2.0,
    }
    cfg.update(sets)
    if cfg["position_embedding_type"] == "rope":
        cfg.setdefault("rotary_base", 10000.0)
    pattern = softmoe_pattern(cfg)
    if not all(pattern):
        cfg.setdefault("ffn_hidden_size", b["ffn_hidden_size"])
    Lm = sum(pattern)
    eta = None
    budget_keys = ("moe_router_k_per_layer", "moe_router_budget", "moe_router_budget_eta")
    if eta_mode != "none":
        eta = softmoe_eta(seed, Lm)
        K = cfg.get("moe_router_budget", round(1.6 * Lm, 3))
        cfg["moe_router_budget"] = K
        if eta_mode == "config":
            cfg["moe_router_budget_eta"] = eta
        if k_crosscheck:
            cfg["moe_router_k_per_layer"] = k_from_eta(eta, K)
    elif not any(k in sets for k in budget_keys):
        # Non-uniform, one integer k (2.0: the e = 0 branch of the solver), all < n.
        cfg["moe_router_k_per_layer"] = [min(round(1.2 + (0.4 * j) % 2.0, 3), n / 2)
                                         for j in range(Lm)]
    if cfg.get("tie_word_embeddings") is True:
        tied = True
    H, n_h, n_g = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_query_groups"]
    if H % n_h or n_h % n_g or len(pattern) != cfg["num_layers"]:
        sys.exit("gen_tiny_model: invalid softmoe config (heads / groups / moe_layer_freq)")
    return cfg, tied, (eta if eta_mode == "tensor" else None)


def softmoe_tensor_specs(c, vocab, tied, with_eta, router_std=2.0):
    """[(name, shape, init)]: exactly the §7.2.2 set for config c."""
    H, n_h, n_g = c["hidden_size"], c["num_attention_heads"], c["num_query_groups"]
    hd = H // n_h
    n, F = c["num_experts"], c["moe_ffn_hidden_size"]
    ln = c["norm_type"] == "layernorm"
    swiglu = c["expert_activation"] == "swiglu"
    lin_bias = bool(c.get("add_bias_linear", False))
    qkv_bias = lin_bias or bool(c.get("add_qkv_bias", False))
    bias = normal(0.1)
    specs = [("model.embed_tokens.weight", (vocab, H), normal(1.0))]
    if c["position_embedding_type"] == "learned_absolute":
        specs.append(("model.embed_positions.weight", (c["max_position_embeddings"], H), normal(0.5)))

    def norm(prefix, weight_init=None):
        out = [(f"{prefix}.weight", (H,), weight_init or norm_weight())]
        if ln:
            out.append((f"{prefix}.bias", (H,), bias))
        return out

    def ffn(prefix, width, stacked, down_std):
        lead = (n,) if stacked else ()
        out = [(f"{prefix}.up_proj.weight", lead + (width, H), normal(1 / math.sqrt(H)))]
        if swiglu:
            out.append((f"{prefix}.gate_proj.weight", lead + (width, H), normal(1 / math.sqrt(H))))
        out.append((f"{prefix}.down_proj.weight", lead + (H, width), normal(down_std)))
        if lin_bias:
            out.append((f"{prefix}.up_proj.bias", lead + (width,), bias))
            if swiglu:
                out.append((f"{prefix}.gate_proj.bias", lead + (width,), bias))
            out.append((f"{prefix}.down_proj.bias", lead + (H,), normal(0.05)))
        return out

    for i, moe in enumerate(softmoe_pattern(c)):
        p = f"model.layers.{i}"
        specs += norm(f"{p}.input_layernorm")
        a = f"{p}.self_attn"
        specs += [(f"{a}.q_proj.weight", (n_h * hd, H), normal(1 / math.sqrt(H))),
                  (f"{a}.k_proj.weight", (n_g * hd, H), normal(1 / math.sqrt(H))),
                  (f"{a}.v_proj.weight", (n_g * hd, H), normal(1 / math.sqrt(H)))]
        if qkv_bias:
            specs += [(f"{a}.q_proj.bias", (n_h * hd,), bias), (f"{a}.k_proj.bias", (n_g * hd,), bias),
                      (f"{a}.v_proj.bias", (n_g * hd,), bias)]
        specs.append((f"{a}.o_proj.weight", (H, n_h * hd), normal(1 / math.sqrt(n_h * hd))))
        if lin_bias:
            specs.append((f"{a}.o_proj.bias", (H,), bias))
        specs += norm(f"{p}.post_attention_layernorm")
        if moe:
            # Router logits of std ~ROUTER_STD·max(1, log_8 n) (alpha 1): soft weights that vary
            # from token to token, with realised active counts between 1 and the cap.
            std = router_std * max(1.0, math.log(n) / math.log(8))
            specs.append((f"{p}.mlp.router.weight", (n, H), normal(std / math.sqrt(H))))
            specs += ffn(f"{p}.mlp.experts", F, True, 0.8 / math.sqrt(F))
        else:
            specs += ffn(f"{p}.mlp", c["ffn_hidden_size"], False, 0.6 / math.sqrt(c["ffn_hidden_size"]))
    specs += norm("model.norm", norm_weight(2.5 / math.sqrt(H)) if tied else None)
    if not tied:
        specs.append(("lm_head.weight", (vocab, H), normal(2.5 / math.sqrt(H))))
    if with_eta is not None:
        eta = np.asarray(with_eta, dtype=np.float32)
        specs.append(("model.moe_budget.eta", (len(eta),), lambda rng, shape: eta.copy()))
    return specs


# ---------------------------------------------------------------- main

def parse_sets(items):
    out = {}
    for item in items:
        if "=" not in item:
            sys.exit(f"gen_tiny_model: --set needs key=value, got {item!r}")
        k, v = item.split("=", 1)
        try:
            out[k] = json.loads(v)
        except json.JSONDecodeError:
            out[k] = v  # bare strings: --set router_norm_type=rms
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--variant", default="deco", choices=VARIANTS)
    ap.add_argument("--size", default="tiny", choices=list(SIZES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", default="bf16", choices=["f32", "bf16", "f16"])
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--tokenizer", default="none", choices=["none", "train"])
    ap.add_argument("--vocab", type=int, help="model vocab; with --tokenizer train the spm target")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=JSON")
    ap.add_argument("--tied", action="store_true", help="omit lm_head.weight (tied head)")
    ap.add_argument("--write-bin", action="store_true", help="also write pytorch_model.bin")
    ap.add_argument("--bin-only", action="store_true", help="write only pytorch_model.bin")
    ap.add_argument("--eta-config", action="store_true",
                    help="softmoe: k from eta + K given as keys (moe_router_budget_eta, moe_router_budget)")
    ap.add_argument("--eta-tensor", action="store_true",
                    help="softmoe: k from eta as the tensor model.moe_budget.eta + key moe_router_budget")
    ap.add_argument("--k-crosscheck", action="store_true",
                    help="softmoe with --eta-*: also write the k list eta implies (moe_router_k_per_layer)")
    ap.add_argument("--target-activation", type=float, metavar="R",
                    help="ReLU routers: calibrate to expert activation ratio R, e.g. 0.2 (see above)")
    ap.add_argument("--calib-tokens", type=int, default=1024,
                    help="with --target-activation: calibration tokens (default 1024)")
    ap.add_argument("--calib-seq-len", type=int, default=160,
                    help="with --target-activation: calibration and held-out sequence length "
                         "(default 160: the decode benchmark's 32 + 128 positions)")
    ap.add_argument("--heldout-tokens", type=int, default=512,
                    help="with --target-activation: held-out tokens for the report (default 512)")
    ap.add_argument("--verbose", action="store_true", help="per-layer calibration progress")
    a = ap.parse_args(argv)

    os.makedirs(a.out, exist_ok=True)
    vocab = a.vocab or SIZES[a.size]["vocab"]
    if a.tokenizer == "train":
        vocab = train_tokenizer(a.out, a.vocab or 1000, a.seed)
    dtype = {"f32": "F32", "bf16": "BF16", "f16": "F16"}[a.dtype]
    if a.variant == "softmoe":
        if a.eta_config and a.eta_tensor:
            sys.exit("gen_tiny_model: give at most one of --eta-config and --eta-tensor")
        if a.shards != 1 or a.write_bin or a.bin_only:
            sys.exit("gen_tiny_model: softmoe checkpoints are one model.safetensors (spec §7.2)")
        eta_mode = "config" if a.eta_config else "tensor" if a.eta_tensor else "none"
        cfg, tied, eta = build_softmoe_config(a.size, vocab, parse_sets(a.set), a.tied, eta_mode,
                                              a.k_crosscheck, a.seed)
        specs = softmoe_tensor_specs(cfg, vocab, tied, eta)
    else:
        cfg = build_config(a.variant, a.size, vocab, parse_sets(a.set))
        specs = tensor_specs(cfg, vocab, a.tied)
    computed = {}
    if a.target_activation is not None:
        if a.variant == "softmoe":
            sys.exit("gen_tiny_model: --target-activation does not apply to softmoe (LapSum "
                     "soft top-k: the per-layer k sets the activation, see moe_router_k_per_layer)")
        computed = calibrate_activation(a, cfg, specs, dtype)
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")

    by_name = {n: (s, init) for n, s, init in specs}

    def produce(name):
        if name in computed:
            return computed[name]
        shape, init = by_name[name]
        return make_tensor(a.seed, name, shape, init)

    if not a.bin_only:
        st.write_model(a.out, [(n, stored_dtype(n, dtype), s) for n, s, _ in specs], produce,
                       shards=a.shards, metadata={"format": "pt"})
    if a.write_bin or a.bin_only:
        write_bin(os.path.join(a.out, "pytorch_model.bin"), specs, produce, dtype)
    return 0


def write_bin(path, specs, produce, dtype):
    import torch  # only needed for .bin output
    tdt = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16}
    sd = {}
    for name, _, _ in specs:
        arr, dt = produce(name), stored_dtype(name, dtype)
        if dt == "BF16":  # exact bit patterns, same rounding as the safetensors path
            bits = st.fp32_to_bf16_bits(arr).view(np.int16)
            sd[name] = torch.from_numpy(bits.copy()).view(torch.bfloat16)
        else:
            sd[name] = torch.from_numpy(arr.copy()).to(tdt[dt])
    torch.save(sd, path)


if __name__ == "__main__":
    sys.exit(main())
