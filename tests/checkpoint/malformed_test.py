#!/usr/bin/python3
"""Malformed-checkpoint test: the engine must refuse every broken checkpoint cleanly.

  malformed_test.py --engine PATH --workdir DIR [--only a,b] [--list]

From valid tiny checkpoints (deco single-file, deco 2 shards, topk, softmoe) each case below builds a
broken copy and runs  ENGINE --model CASE_DIR --token-ids 1,2,3 --max-new-tokens 0.
A refusal passes when: exit code > 0 (not killed by a signal), stderr non-empty, and stderr
contains (case-insensitively) at least one of the case's expected strings — the culprit file,
config key or tensor name. Control cases must exit 0. Edit CASES to adjust expectations.
Self-check of this harness without the engine: --engine tests/reference/fake_engine.py
"""
import argparse
import json
import os
import shutil
import struct
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tools", "py"))
import safetensors_io as st  # noqa: E402

ST = "model.safetensors"
SHARD2 = "model-00002-of-00002.safetensors"
L1Q = "model.layers.1.self_attn.q_proj.weight"


# ---------------------------------------------------------------- raw file surgery

def read_raw(path):
    """-> (metadata, [(name, info, bytes)] in data order)."""
    entries, start, meta = st.read_header(path)
    out = []
    with open(path, "rb") as f:
        for name, (dtype, shape, b, e) in sorted(entries.items(), key=lambda kv: kv[1][2]):
            f.seek(start + b)
            out.append((name, {"dtype": dtype, "shape": list(shape)}, f.read(e - b)))
    return meta, out


def write_raw(path, meta, tensors, offsets=None):
    """Lay tensors out back to back (or at explicit offsets {name: [b, e]})."""
    header, data, pos = ({"__metadata__": meta} if meta else {}), b"", 0
    for name, info, blob in tensors:
        header[name] = dict(info, data_offsets=(offsets or {}).get(name, [pos, pos + len(blob)]))
        data += blob
        pos += len(blob)
    with open(path, "wb") as f:
        f.write(st.pack_header(header) + data)


def edit_tensors(fn, file=ST):
    """Mutator: fn(tensors list) -> (tensors, offsets or None), rewrites `file`."""
    def mutate(d):
        meta, t = read_raw(os.path.join(d, file))
        t, offsets = fn(t)
        write_raw(os.path.join(d, file), meta, t, offsets)
    return mutate


def edit_header(fn):
    """Mutator on the parsed JSON header, data section untouched."""
    def mutate(d):
        p = os.path.join(d, ST)
        raw = open(p, "rb").read()
        (n,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8:8 + n])
        fn(header)
        with open(p, "wb") as f:
            f.write(st.pack_header(header) + raw[8 + n:])
    return mutate


def edit_bytes(fn):
    def mutate(d):
        p = os.path.join(d, ST)
        raw = open(p, "rb").read()
        with open(p, "wb") as f:
            f.write(fn(raw))
    return mutate


def edit_config(**changes):
    def mutate(d):
        p = os.path.join(d, "config.json")
        c = json.load(open(p))
        for k, v in changes.items():
            if v is DELETE:
                c.pop(k, None)
            else:
                c[k] = v
        json.dump(c, open(p, "w"), indent=2)
    return mutate


DELETE = object()


def remove(name):
    return lambda d: os.remove(os.path.join(d, name))


def write_text(name, text):
    def mutate(d):
        with open(os.path.join(d, name), "w") as f:
            f.write(text)
    return mutate


# ---------------------------------------------------------------- individual mutations

def header_len(raw):
    return struct.unpack("<Q", raw[:8])[0]


def overlap(t):
    """Point layer-0 post_attention_layernorm at input_layernorm's bytes and drop its own,
    so the only defect is the overlap (the data is still fully covered)."""
    a, b = "model.layers.0.input_layernorm.weight", "model.layers.0.post_attention_layernorm.weight"
    keep = [x for x in t if x[0] != b]
    offsets, pos = {}, 0
    for name, _, blob in keep:
        offsets[name] = [pos, pos + len(blob)]
        pos += len(blob)
    info_b = next(x[1] for x in t if x[0] == b)
    offsets[b] = offsets[a]
    return keep + [(b, info_b, b"")], offsets


def write_with_padding(d):
    """Gap case: 8 bytes that belong to no tensor right before L1Q; offsets stay consistent."""
    meta, t = read_raw(os.path.join(d, ST))
    header, data = ({"__metadata__": meta} if meta else {}), b""
    for n, i, blob in t:
        if n == L1Q:
            data += b"\0" * 8
        header[n] = dict(i, data_offsets=[len(data), len(data) + len(blob)])
        data += blob
    with open(os.path.join(d, ST), "wb") as f:
        f.write(st.pack_header(header) + data)


def swap_begin_end(h):
    b, e = h[L1Q]["data_offsets"]
    h[L1Q]["data_offsets"] = [e, b]


def grow_last(t):
    """Last tensor claims one more row than the file holds (consistent shape, past EOF)."""
    name, info, blob = t[-1]
    row = len(blob) // info["shape"][0]
    offsets, pos = {}, 0
    for n, _, bl in t:
        offsets[n] = [pos, pos + len(bl)]
        pos += len(bl)
    offsets[name][1] += row
    return t[:-1] + [(name, dict(info, shape=[info["shape"][0] + 1] + info["shape"][1:]), blob)], \
        offsets


def retype(name, dtype):
    return edit_header(lambda h: h[name].update(dtype=dtype))


def reshape(name, shape):
    return edit_header(lambda h: h[name].update(shape=shape))


def drop(name):
    return edit_tensors(lambda t: ([x for x in t if x[0] != name], None))


def add_extra(name, n):
    return edit_tensors(lambda t: (t + [(name, {"dtype": t[0][1]["dtype"], "shape": [n]},
                                         b"\0" * (n * st.DTYPES[t[0][1]["dtype"]][1]))], None))


def index_misroute(d):
    """Map the first tensor of shard 2 to shard 1 in the index."""
    p = os.path.join(d, st.INDEX_NAME)
    idx = json.load(open(p))
    idx["weight_map"][misrouted(d)] = "model-00001-of-00002.safetensors"
    json.dump(idx, open(p, "w"))


def misrouted(d):
    """Expected-name callable: the tensor index_misroute moves (first of shard 2 by name)."""
    entries, _, _ = st.read_header(os.path.join(d, SHARD2))
    return sorted(entries)[0]


def hf_fallback_only(d):
    """Megatron keys removed, HF keys correct: the spec says HF keys are fallbacks."""
    p = os.path.join(d, "config.json")
    c = json.load(open(p))
    c.update(num_hidden_layers=c.pop("num_layers"), num_key_value_heads=c.pop("num_query_groups"),
             intermediate_size=c.pop("ffn_hidden_size"))
    json.dump(c, open(p, "w"), indent=2)


# (name, base, mutate(case_dir), expected substrings — any of them, case-insensitive; an entry
# may be a callable(case_dir) evaluated before mutation — or None: the engine must succeed)
CASES = [
    ("control_valid", "deco", lambda d: None, None),
    ("control_valid_sharded", "sharded", lambda d: None, None),
    ("control_hf_fallback_keys", "deco", hf_fallback_only, None),
    ("missing_config", "deco", remove("config.json"), ["config.json"]),
    ("missing_safetensors", "deco", remove(ST), [ST]),
    ("config_not_json", "deco", write_text("config.json", '{"num_layers": 3,, oops'),
     ["config.json"]),
    ("truncated_in_data", "deco", edit_bytes(lambda r: r[:-100]), [ST, "lm_head.weight"]),
    ("truncated_in_header", "deco", edit_bytes(lambda r: r[:8 + header_len(r) // 2]), [ST]),
    ("shorter_than_8_bytes", "deco", edit_bytes(lambda r: r[:5]), [ST]),
    ("header_len_past_eof", "deco", edit_bytes(lambda r: struct.pack("<Q", 2 * len(r)) + r[8:]),
     [ST]),
    ("header_not_json", "deco",
     edit_bytes(lambda r: r[:8] + b"{not json".ljust(header_len(r)) + r[8 + header_len(r):]),
     [ST]),
    ("offsets_past_eof", "deco", edit_tensors(grow_last), ["lm_head.weight", ST]),
    ("overlapping_tensors", "deco", edit_tensors(overlap),
     ["model.layers.0.post_attention_layernorm.weight", "model.layers.0.input_layernorm.weight"]),
    ("gap_between_tensors", "deco", write_with_padding,
     [L1Q, "model.layers.1.input_layernorm.weight", ST]),
    ("end_before_begin", "deco", edit_header(swap_begin_end), [L1Q]),
    ("offsets_vs_dtype_shape", "deco", reshape("model.norm.weight", [32]), ["model.norm.weight"]),
    ("unknown_dtype", "deco", retype(L1Q, "I64"), [L1Q, "I64"]),
    ("wrong_shape_q_proj", "deco", reshape(L1Q, [32, 128]), [L1Q]),
    ("missing_tensor", "deco", drop("model.layers.2.self_attn.k_proj.weight"),
     ["model.layers.2.self_attn.k_proj.weight"]),
    ("unexpected_tensor", "deco", add_extra("model.layers.0.mlp.extra_bias", 64),
     ["model.layers.0.mlp.extra_bias"]),
    ("shard_file_missing", "sharded", remove(SHARD2), [SHARD2]),
    ("index_names_wrong_shard", "sharded", index_misroute, [misrouted]),
    ("index_not_json", "sharded", write_text(st.INDEX_NAME, "{]"), [st.INDEX_NAME]),
    ("unknown_router_norm_type", "deco", edit_config(router_norm_type="layernorm"),
     ["router_norm_type"]),
    # upstream asserts a string; JSON null could mean "unset" (simple) or "null" (identity)
    ("router_norm_type_json_null", "deco", edit_config(router_norm_type=None),
     ["router_norm_type"]),
    ("unknown_expert_act_func", "deco", edit_config(expert_act_func="gelu"), ["expert_act_func"]),
    ("unknown_router_type", "topk", edit_config(router_type="expert_choice"), ["router_type"]),
    ("use_mup_true", "deco", edit_config(use_mup=True), ["use_mup"]),
    ("rope_scaling_set", "deco", edit_config(rope_scaling={"type": "linear", "factor": 2.0}),
     ["rope_scaling"]),
    ("num_query_groups_vs_k_proj", "deco", edit_config(num_query_groups=4),
     ["num_query_groups", "k_proj"]),
    ("num_query_groups_not_divisor", "deco", edit_config(num_query_groups=3),
     ["num_query_groups"]),
    ("hidden_size_wrong", "deco", edit_config(hidden_size=80), ["hidden_size"]),
    ("num_layers_too_many", "deco", edit_config(num_layers=4, moe_layer_freq=[0, 1, 1, 1]),
     ["num_layers", "model.layers.3"]),
    ("moe_layer_freq_wrong_length", "deco", edit_config(moe_layer_freq=[0, 1]),
     ["moe_layer_freq"]),
    # SoftMoE server checkpoints (spec softmoe.md §7.2): every refusal names the key or tensor.
    ("control_valid_softmoe", "softmoe", lambda d: None, None),
    ("control_valid_softmoe_rms", "softmoe_rms", lambda d: None, None),
    ("control_valid_softmoe_eta_tensor", "softmoe_eta", lambda d: None, None),
    ("control_softmoe_unknown_keys_ignored", "softmoe",
     edit_config(num_hidden_layers="stale", rope_theta=[1], intermediate_size=64.5, torch_dtype=None,
                 hidden_act={"x": 1}, eos_token_id="none"), None),
    ("control_softmoe_null_is_absent", "softmoe", edit_config(norm_epsilon=None, moe_layer_freq=None), None),
    ("softmoe_k_equals_n", "softmoe", edit_config(moe_router_k_per_layer=[1.2, 8, 2.0]),
     ["moe_router_k_per_layer"]),
    ("softmoe_k_zero", "softmoe", edit_config(moe_router_k_per_layer=0), ["moe_router_k_per_layer"]),
    ("softmoe_k_list_wrong_length", "softmoe", edit_config(moe_router_k_per_layer=[1.5, 1.5]),
     ["moe_router_k_per_layer"]),
    ("softmoe_k_not_a_number", "softmoe", edit_config(moe_router_k_per_layer="1.5"),
     ["moe_router_k_per_layer"]),
    ("softmoe_no_k_source", "softmoe", edit_config(moe_router_k_per_layer=DELETE),
     ["moe_router_k_per_layer"]),
    ("softmoe_eta_and_k_inconsistent", "softmoe_eta", edit_config(moe_router_k_per_layer=[1.2, 1.6, 2.0]),
     ["moe_router_k_per_layer"]),
    ("softmoe_eta_both_sources", "softmoe_eta", edit_config(moe_router_budget_eta=[0.0, 0.0, 0.0]),
     ["moe_router_budget_eta", "model.moe_budget.eta"]),
    ("softmoe_eta_without_budget", "softmoe_eta", edit_config(moe_router_budget=DELETE),
     ["moe_router_budget"]),
    ("softmoe_budget_without_eta", "softmoe", edit_config(moe_router_budget=4.8), ["moe_router_budget"]),
    ("softmoe_budget_below_layers", "softmoe_eta", edit_config(moe_router_budget=2.0),
     ["moe_router_budget"]),
    ("softmoe_eta_config_wrong_length", "softmoe",
     edit_config(moe_router_k_per_layer=DELETE, moe_router_budget=4.8, moe_router_budget_eta=[0.1, 0.2]),
     ["moe_router_budget_eta"]),
    ("softmoe_eta_tensor_wrong_shape", "softmoe_eta", reshape("model.moe_budget.eta", [1, 3]),
     ["model.moe_budget.eta"]),
    ("softmoe_float_as_int", "softmoe", edit_config(hidden_size=64.0), ["hidden_size"]),
    ("softmoe_bool_as_int", "softmoe", edit_config(num_experts=True), ["num_experts"]),
    ("softmoe_bool_as_number", "softmoe", edit_config(moe_router_lapsum_scale=True),
     ["moe_router_lapsum_scale"]),
    ("softmoe_int_as_bool", "softmoe", edit_config(add_bias_linear=1), ["add_bias_linear"]),
    ("softmoe_missing_norm_type", "softmoe", edit_config(norm_type=DELETE), ["norm_type"]),
    ("softmoe_null_norm_type", "softmoe", edit_config(norm_type=None), ["norm_type"]),
    ("softmoe_unknown_norm_type", "softmoe", edit_config(norm_type="batchnorm"), ["norm_type"]),
    ("softmoe_unknown_activation", "softmoe", edit_config(expert_activation="relu"), ["expert_activation"]),
    ("softmoe_unknown_positions", "softmoe", edit_config(position_embedding_type="alibi"),
     ["position_embedding_type"]),
    ("softmoe_wrong_architectures", "softmoe", edit_config(architectures=["LlamaForCausalLM"]),
     ["architectures"]),
    ("softmoe_wrong_model_type", "softmoe", edit_config(model_type="deco"), ["model_type"]),
    ("softmoe_one_expert", "softmoe", edit_config(num_experts=1), ["num_experts"]),
    ("softmoe_alpha_zero", "softmoe", edit_config(moe_router_lapsum_scale=0), ["moe_router_lapsum_scale"]),
    ("softmoe_no_moe_layer", "softmoe", edit_config(moe_layer_freq=[0, 0, 0]), ["moe_layer_freq"]),
    ("softmoe_dense_without_ffn_size", "softmoe", edit_config(moe_layer_freq=2), ["ffn_hidden_size"]),
    ("softmoe_lm_head_when_tied", "softmoe", edit_config(tie_word_embeddings=True), ["lm_head.weight"]),
    ("softmoe_lm_head_missing_untied", "softmoe", drop("lm_head.weight"), ["lm_head.weight"]),
    ("softmoe_bias_on_rmsnorm", "softmoe_rms", add_extra("model.layers.0.input_layernorm.bias", 64),
     ["model.layers.0.input_layernorm.bias"]),
    ("softmoe_bias_with_flag_off", "softmoe_rms", add_extra("model.layers.1.self_attn.o_proj.bias", 64),
     ["model.layers.1.self_attn.o_proj.bias"]),
    ("softmoe_router_bias", "softmoe", add_extra("model.layers.0.mlp.router.bias", 8),
     ["model.layers.0.mlp.router.bias"]),
    ("softmoe_missing_expert_bias", "softmoe", drop("model.layers.1.mlp.experts.down_proj.bias"),
     ["model.layers.1.mlp.experts.down_proj.bias"]),
    ("softmoe_missing_layernorm_bias", "softmoe", drop("model.norm.bias"), ["model.norm.bias"]),
    ("softmoe_missing_positions", "softmoe", drop("model.embed_positions.weight"),
     ["model.embed_positions.weight"]),
    ("softmoe_swiglu_without_gate", "softmoe", edit_config(expert_activation="swiglu"), ["gate_proj"]),
    ("softmoe_expert_width_vs_tensor", "softmoe",
     reshape("model.layers.0.mlp.experts.up_proj.weight", [8, 8, 128]),
     ["moe_ffn_hidden_size", "model.layers.0.mlp.experts.up_proj.weight"]),
    ("softmoe_num_experts_vs_tensor", "softmoe", edit_config(num_experts=4), ["num_experts"]),
    ("softmoe_vocab_vs_tensor", "softmoe", edit_config(vocab_size=321), ["vocab_size"]),
    ("softmoe_positions_beyond_max", "softmoe_rms", edit_config(max_position_embeddings=2),
     ["max_position_embeddings", "max context"]),
]

BASES = {  # name -> generator args (tiny, seed 1, bf16 like a real export)
    "deco": ["--variant", "deco"],
    "sharded": ["--variant", "deco", "--shards", "2"],
    "topk": ["--variant", "topk"],
    "softmoe": ["--variant", "softmoe"],
    "softmoe_rms": ["--variant", "softmoe", "--set", "norm_type=rmsnorm", "--set", "position_embedding_type=rope",
                    "--set", "expert_activation=swiglu", "--set", "add_bias_linear=false"],
    "softmoe_eta": ["--variant", "softmoe", "--eta-tensor"],
}


def make_bases(workdir):
    for name, args in BASES.items():
        out = os.path.join(workdir, "base_" + name)
        shutil.rmtree(out, ignore_errors=True)
        subprocess.run([sys.executable, os.path.join(ROOT, "tools", "gen_tiny_model.py"),
                        "--out", out, "--size", "tiny", "--seed", "1", "--dtype", "bf16", *args],
                       check=True)


def run_case(engine, workdir, name, base, mutate, expected, timeout):
    d = os.path.join(workdir, "cases", name)
    shutil.rmtree(d, ignore_errors=True)
    shutil.copytree(os.path.join(workdir, "base_" + base), d)
    expected = [e(d) if callable(e) else e for e in (expected or [])]  # before mutating
    mutate(d)
    try:
        r = subprocess.run([engine, "--model", d, "--token-ids", "1,2,3", "--max-new-tokens", "0"],
                           capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"timed out after {timeout}s"
    err = r.stderr.strip()
    last = err.splitlines()[-1][:200] if err else "(empty stderr)"
    if not expected:  # control: must load and run
        return r.returncode == 0, f"rc={r.returncode} {last if r.returncode else ''}".strip()
    if r.returncode < 0:
        return False, f"killed by signal {-r.returncode} (crash) {last}"
    if r.returncode == 0:
        return False, "accepted the broken checkpoint (rc=0)"
    if not err:
        return False, f"rc={r.returncode} but stderr is empty"
    if not any(e.lower() in err.lower() for e in expected):
        return False, f"rc={r.returncode} but stderr names none of {expected}: {last}"
    return True, f"rc={r.returncode} {last}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--engine", required=False)
    ap.add_argument("--workdir", required=False)
    ap.add_argument("--only", default="", help="comma-separated case names")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--timeout", type=int, default=60)
    a = ap.parse_args(argv)
    if a.list:
        for name, base, _, exp in CASES:
            print(f"{name:32s} base={base:8s} expect={exp if exp else 'exit 0'}")
        return 0
    if not a.engine or not a.workdir:
        ap.error("--engine and --workdir are required")
    wd = os.path.abspath(a.workdir)
    os.makedirs(wd, exist_ok=True)
    make_bases(wd)
    only = set(filter(None, a.only.split(",")))
    failures = 0
    for name, base, mutate, expected in CASES:
        if only and name not in only:
            continue
        ok, msg = run_case(a.engine, wd, name, base, mutate, expected, a.timeout)
        failures += not ok
        print(f"{'PASS' if ok else 'FAIL'} {name:32s} {msg}")
    print(f"malformed_test: {'PASS' if not failures else f'{failures} FAILED'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
