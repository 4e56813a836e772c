#!/usr/bin/python3
"""PyTorch eager baseline for DECO decode at batch 1 (issue 6, item 4).

Runs a DECO/BlockFFN checkpoint directory (config.json + model.safetensors, e.g. from
tools/gen_tiny_model.py) in plain PyTorch eager mode: greedy decode at batch 1 with a KV cache,
torch.inference_mode(), torch.set_num_threads(--threads). The math follows spec deco.md §3 and
the project's float64 numpy reference (tests/reference/deco_reference.py), whose config parsing
and validation (deco_reference.Config, expected_tensors) and safetensors loader
(tools/py/safetensors_io.py) are reused here; only the forward pass is written in torch.

  torch_eager_bench.py --model DIR [--dtype bf16|f32] [--threads 2] [--runs 5]
                       [--prompt-len 32] [--new-tokens 128] [--moe gather|loop]
  torch_eager_bench.py --model DIR --check [--dtype ...] [--moe ...]

Benchmark: one warm-up run, then --runs runs; each run prefills a BOS + random-id prompt (fixed
seed, logits of the last position only) and then does --new-tokens decode steps, one forward of
one token each (the same protocol as build/bench/decode_bench: the prefill is timed separately).
Prints one JSON object: decode tokens/s (median, min, max, every run), prefill tokens/s, torch
version, threads, dtype, MoE implementation, mean active experts per MoE layer and token.

--check: compares this module's logits on a short prompt against deco_reference.forward, both a
full prefill and a prefill/decode split (first half prefilled, rest decoded one token at a time
through the KV cache), plus the per-token active-expert sets of the prefill; bounds of spec §10
(f32: max |dlogit| <= 1e-3, routing identical away from 1e-4 margins; bf16: mean <= 0.05, max <=
0.5, row cosine >= 0.997, argmax equal where the reference's top-2 gap >= 0.5, active sets equal
where the margin >= 0.05 and <= 1 % of (token, expert) pairs different). Without --dtype/--moe it
checks every dtype x implementation. Exit status 0 iff every comparison is within bounds.

Precision (spec §3.5): weights and activations (including the residual stream) in --dtype; RMSNorm
statistics, RoPE, router logits / ReLU / expert-wise scaling, the NormSiLU statistics and the
attention softmax in fp32, cast back to --dtype before the next matmul.
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(ROOT, "tools", "py"))
sys.path.insert(0, os.path.join(ROOT, "tests", "reference"))
import deco_reference as R  # noqa: E402
import safetensors_io as st  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16}


class BenchError(Exception):
    pass


# ---------------------------------------------------------------- loading

def load_f32(model_dir):
    """-> (Config, float32 numpy weights, V), validated exactly like deco_reference.load_checkpoint
    (its Config and expected_tensors), without the reference's float64 copy of every tensor."""
    try:
        with open(os.path.join(model_dir, "config.json")) as f:
            raw = json.load(f)
        cfg = R.Config(raw)
        shapes = {n: tuple(s) for n, (_, _, s) in st.read_model_headers(model_dir).items()}
    except (OSError, json.JSONDecodeError, R.RefError, st.SafetensorsError) as e:
        raise BenchError(str(e))
    emb = shapes.get("model.embed_tokens.weight")
    if emb is None or len(emb) != 2 or emb[1] != cfg.H:
        raise BenchError(f"model.embed_tokens.weight shape {emb} does not match hidden_size {cfg.H}")
    V = emb[0]
    expected = cfg.expected_tensors(V, tied="lm_head.weight" not in shapes)
    if {k: tuple(v) for k, v in expected.items()} != shapes:
        raise BenchError("tensor set/shapes do not match config.json (run deco_reference.py on the "
                         "checkpoint for the exact message)")
    return cfg, st.load_model(model_dir), V


def check_supported(cfg):
    for i in range(cfg.L):
        if cfg.is_moe[i] and not cfg.use_blockffn:
            raise BenchError(f"layer {i}: router_type {cfg.router_type!r} layers are not implemented "
                             "here (DECO/BlockFFN layers only)")
    if any(cfg.is_moe) and cfg.norm_type == "normal":
        raise BenchError("router_norm_type 'normal' makes every expert contribute (dense layer); "
                         "this sparse baseline does not implement it")


# ---------------------------------------------------------------- model

class TorchDeco:
    """DECO forward in torch eager with a preallocated KV cache (one sequence).

    The MoE layer is sparse, written the way a PyTorch user would (--moe):
      gather (default): route every token (fp32 router, ReLU), take the active expert ids of the
        token (for a multi-token prefill chunk: the union over its tokens; tokens outside an
        expert's set get weight exactly 0), gather (W[ids]) those experts' blocks out of the
        expert-major up/gate [E, d, H] and down [E, d, H] weights, and run one matmul per
        projection over the selected blocks only.
      loop: the Hugging Face Mixtral/Qwen-MoE pattern: loop in Python over the experts that are
        active for at least one token, gather that expert's tokens (m[tok]), run the expert
        on them through views of its weight block, and index_add_ the weighted output back.
    Neither evaluates inactive experts; the NormSiLU mean over all E*d units (§3.3 step 6) comes
    from one precomputed fp32 vector, mean(u) = ubar . m.
    """

    def __init__(self, cfg, w, V, dtype, moe="gather", max_len=4096):
        self.cfg, self.V, self.dtype, self.moe_impl = cfg, V, dtype, moe
        t = lambda n: torch.from_numpy(np.ascontiguousarray(w[n])).to(dtype)  # noqa: E731
        f32 = lambda n: torch.from_numpy(np.ascontiguousarray(w[n], dtype=np.float32))  # noqa: E731
        self.embed = t("model.embed_tokens.weight")
        self.head = t("lm_head.weight") if "lm_head.weight" in w else self.embed
        self.norm = t("model.norm.weight")
        E, d, H = cfg.E, cfg.d, cfg.H
        self.layers = []
        for i in range(cfg.L):
            p = f"model.layers.{i}"
            L = dict(ln1=t(f"{p}.input_layernorm.weight"), ln2=t(f"{p}.post_attention_layernorm.weight"),
                     q=t(f"{p}.self_attn.q_proj.weight"), k=t(f"{p}.self_attn.k_proj.weight"),
                     v=t(f"{p}.self_attn.v_proj.weight"), o=t(f"{p}.self_attn.o_proj.weight"),
                     moe=cfg.is_moe[i])
            m = f"{p}.mlp"
            if not cfg.is_moe[i]:
                L.update(gate=t(f"{m}.gate_proj.weight"), up=t(f"{m}.up_proj.weight"),
                         down=t(f"{m}.down_proj.weight"))
            else:
                L["router"] = f32(f"{m}.moe_router.weight")  # router logits in fp32 (§3.3 step 1)
                L["scale"] = (torch.tensor(cfg.norm_init, dtype=torch.float32) if cfg.norm_fixed
                              else f32(f"{m}.router_norm.weight"))
                L["up3"] = t(f"{m}.expert_up_proj.weight").view(E, d, H)
                L["gate3"] = t(f"{m}.expert_gate_proj.weight").view(E, d, H) if cfg.gated else None
                # [H, E*d] -> expert-major [E, d, H] so each expert's columns are one contiguous block
                L["down3"] = t(f"{m}.expert_down_proj.weight").t().contiguous().view(E, d, H)
                act_in = w[f"{m}.expert_gate_proj.weight" if cfg.gated else f"{m}.expert_up_proj.weight"]
                # ubar from the weights as stored (then rounded to the compute dtype, like the matmul)
                src = torch.from_numpy(np.ascontiguousarray(act_in)).to(dtype).double()
                L["ubar"] = src.mean(0).float()
                L["gamma"] = (f32(f"{m}.expert_act.rms_norm.weight")
                              if cfg.act in ("norm_silu", "norm_silu_nomean") else None)
                L["bias"] = f32(f"{m}.expert_bias") if cfg.bias else None
                if cfg.S > 0:
                    s = f"{m}.shared_experts"
                    L.update(sgate=t(f"{s}.gate_proj.weight"), sup=t(f"{s}.up_proj.weight"),
                             sdown=t(f"{s}.down_proj.weight"))
            self.layers.append(L)
        hd = cfg.hd
        inv = 1.0 / (np.float32(cfg.theta) ** (np.arange(0, hd, 2, dtype=np.float32) / np.float32(hd)))
        ang = np.arange(max_len, dtype=np.float64)[:, None] * inv.astype(np.float64)[None]
        self.cos = torch.from_numpy(np.concatenate([np.cos(ang)] * 2, -1).astype(np.float32))
        self.sin = torch.from_numpy(np.concatenate([np.sin(ang)] * 2, -1).astype(np.float32))
        self.max_len = max_len
        self.kc = [torch.zeros(max_len, cfg.n_g, hd, dtype=dtype) for _ in range(cfg.L)]
        self.vc = [torch.zeros(max_len, cfg.n_g, hd, dtype=dtype) for _ in range(cfg.L)]
        self.record = None  # list per MoE layer of bool [T, E] active masks, when not None
        self.active_count = [0, 0]  # (sum of |A| over MoE layers and tokens, layer-token pairs)

    # -------------------------------------------------- pieces

    def rms(self, x, w):
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.cfg.eps)
        return xf.to(self.dtype) * w

    def rope(self, z, pos0):
        T, hd = z.shape[0], z.shape[-1]
        cos = self.cos[pos0:pos0 + T, None, :]
        sin = self.sin[pos0:pos0 + T, None, :]
        zf = z.float()
        rot = torch.cat([-zf[..., hd // 2:], zf[..., :hd // 2]], -1)
        return (zf * cos + rot * sin).to(self.dtype)

    def attention(self, a, L, li, pos0):
        cfg, T = self.cfg, a.shape[0]
        q = F.linear(a, L["q"]).view(T, cfg.n_h, cfg.hd)
        k = F.linear(a, L["k"]).view(T, cfg.n_g, cfg.hd)
        v = F.linear(a, L["v"]).view(T, cfg.n_g, cfg.hd)
        q, k = self.rope(q, pos0), self.rope(k, pos0)
        end = pos0 + T
        self.kc[li][pos0:end] = k
        self.vc[li][pos0:end] = v
        K, Vv = self.kc[li][:end], self.vc[li][:end]
        rep = cfg.n_h // cfg.n_g
        if rep > 1:  # query head j uses KV group j // rep
            K, Vv = K.repeat_interleave(rep, 1), Vv.repeat_interleave(rep, 1)
        s = torch.matmul(q.transpose(0, 1), K.permute(1, 2, 0)).float() / math.sqrt(cfg.hd)
        if T > 1:  # query at position pos0+t sees keys 0 .. pos0+t
            mask = torch.ones(T, end, dtype=torch.bool).tril(pos0)
            s = s.masked_fill(~mask, float("-inf"))
        pr = torch.softmax(s, -1).to(self.dtype)
        o = torch.matmul(pr, Vv.transpose(0, 1)).transpose(0, 1).reshape(T, cfg.n_h * cfg.hd)
        return F.linear(o, L["o"])

    @staticmethod
    def swiglu(m, gate, up, down):
        return F.linear(F.silu(F.linear(m, gate)) * F.linear(m, up), down)

    def routing(self, m, L):
        """fp32 router, ReLU, optional bias gate, expert-wise scaling -> (active [T,E], g [T,E])."""
        cfg = self.cfg
        l = F.linear(m.float(), L["router"])
        active = l > 0
        r = torch.relu(l)
        if cfg.bias:
            b = L["bias"]
            s = l + b if cfg.bias_method == "base" else l + b * l.pow(2).mean(-1, keepdim=True).sqrt()
            active = active & (s > 0)
            r = r * (s > 0)
        if cfg.norm_type == "simple":
            g = r * L["scale"]
        elif cfg.norm_type == "rms":
            g = r * torch.rsqrt(r.pow(2).mean(-1, keepdim=True) + cfg.eps) * L["scale"]
        else:  # "null"
            g = r
        return active, g

    def expert_act(self, v, mean, L):
        """§3.3 step 6 on the selected blocks: v [T, n, d] (any dtype), mean [T] fp32 -> fp32."""
        cfg, vf = self.cfg, v.float()
        if cfg.act == "silu":
            return F.silu(vf)
        c = vf - mean[:, None, None] if cfg.act != "norm_silu_nomean" else vf
        if cfg.act == "norm_silu_norms":
            return F.silu(c)
        return F.silu(c * torch.rsqrt(c.pow(2).mean(-1, keepdim=True) + cfg.eps) * L["gamma"])

    def moe_gather(self, m, L, active, g, mean):
        cfg, T, d, H = self.cfg, m.shape[0], self.cfg.d, self.cfg.H
        ids = (active[0] if T == 1 else active.any(0)).nonzero().squeeze(1)
        n = ids.numel()
        if n == 0:
            return torch.zeros(T, H, dtype=self.dtype)
        # Gather with advanced indexing W[ids]: in torch 1.13 (Debian) W.index_select(0, ids) on a
        # bf16 [E, d, H] tensor is a slow scalar path (~7 ms vs ~0.6 ms for W[ids] at E=42, d=64,
        # H=768, 21 ids, 2 threads), which would dominate a decode step.
        u = F.linear(m, L["up3"][ids].reshape(n * d, H)).view(T, n, d)
        if cfg.gated:
            z = F.linear(m, L["gate3"][ids].reshape(n * d, H)).view(T, n, d)
            h = self.expert_act(z, mean, L).to(self.dtype) * u
        else:
            h = self.expert_act(u, mean, L).to(self.dtype)
        h = h * g.index_select(1, ids).to(self.dtype)[:, :, None]
        return torch.matmul(h.reshape(T, n * d), L["down3"][ids].reshape(n * d, H))

    def moe_loop(self, m, L, active, g, mean):
        cfg = self.cfg
        y = torch.zeros(m.shape[0], cfg.H, dtype=self.dtype)
        for e in active.any(0).nonzero().squeeze(1).tolist():
            tok = active[:, e].nonzero().squeeze(1)  # tokens routed to expert e
            me = m[tok]
            u = F.linear(me, L["up3"][e])[:, None, :]
            if cfg.gated:
                z = F.linear(me, L["gate3"][e])[:, None, :]
                h = self.expert_act(z, mean.index_select(0, tok), L).to(self.dtype) * u
            else:
                h = self.expert_act(u, mean.index_select(0, tok), L).to(self.dtype)
            h = h[:, 0, :] * g.index_select(0, tok)[:, e:e + 1].to(self.dtype)
            y.index_add_(0, tok, torch.matmul(h, L["down3"][e]))
        return y

    def moe(self, m, L):
        active, g = self.routing(m, L)
        if self.record is not None:
            self.record.append(active.clone())
        self.active_count[0] += int(active.sum())
        self.active_count[1] += active.shape[0]
        mean = F.linear(m.float(), L["ubar"][None])[:, 0]  # mean over all E*d pre-activations
        y = (self.moe_gather if self.moe_impl == "gather" else self.moe_loop)(m, L, active, g, mean)
        if self.cfg.S > 0:
            y = y + self.swiglu(m, L["sgate"], L["sup"], L["sdown"])
        return y

    # -------------------------------------------------- forward

    def forward(self, tokens, pos0, all_logits=False):
        """tokens: LongTensor [T] at positions pos0.. (KV cache filled up to pos0) -> fp32 logits."""
        if pos0 + tokens.numel() > self.max_len:
            raise BenchError(f"sequence longer than the KV cache ({self.max_len})")
        x = self.embed[tokens]
        for li, L in enumerate(self.layers):
            x = x + self.attention(self.rms(x, L["ln1"]), L, li, pos0)
            m = self.rms(x, L["ln2"])
            if L["moe"]:
                x = x + self.moe(m, L)
            else:
                x = x + self.swiglu(m, L["gate"], L["up"], L["down"])
        if not all_logits:
            x = x[-1:]
        return F.linear(self.rms(x, self.norm), self.head).float()


# ---------------------------------------------------------------- benchmark

def make_prompt(n, V, seed):
    rng = np.random.default_rng(seed)
    return [1] + [int(t) for t in rng.integers(0, V, n - 1)]  # BOS 1, then random ids


def one_run(model, prompt, new_tokens):
    ids = torch.tensor(prompt, dtype=torch.long)
    t0 = time.perf_counter()
    logits = model.forward(ids, 0)
    t1 = time.perf_counter()
    pos, out = len(prompt), []
    for _ in range(new_tokens):  # greedy: argmax of the previous logits, then one forward step
        tok = int(torch.argmax(logits[-1]))
        out.append(tok)
        logits = model.forward(torch.tensor([tok], dtype=torch.long), pos)
        pos += 1
    t2 = time.perf_counter()
    return len(prompt) / (t1 - t0), new_tokens / (t2 - t1), out


def bench(a):
    dtype_name = a.dtype or "bf16"
    moe = a.moe or "gather"
    t_load = time.perf_counter()
    cfg, w, V = load_f32(a.model)
    check_supported(cfg)
    model = TorchDeco(cfg, w, V, DTYPES[dtype_name], moe, max_len=a.prompt_len + a.new_tokens + 1)
    del w
    t_load = time.perf_counter() - t_load
    pre, dec, gen = [], [], None
    with torch.inference_mode():
        for run in range(a.runs + 1):  # run 0 warms up and is not reported
            prompt = make_prompt(a.prompt_len, V, a.seed + run)
            if run == 1:
                model.active_count = [0, 0]
            p, dtok, out = one_run(model, prompt, a.new_tokens)
            if run == 0:
                gen = out[:16]
                continue
            pre.append(p)
            dec.append(dtok)
    act, pairs = model.active_count
    res = {
        "bench": "torch_eager", "model": os.path.abspath(a.model), "torch_version": torch.__version__,
        "threads": torch.get_num_threads(), "dtype": dtype_name, "moe_impl": moe,
        "prompt_len": a.prompt_len, "new_tokens": a.new_tokens, "batch": 1, "runs": a.runs,
        "decode_tokens_per_s": statistics.median(dec), "decode_tokens_per_s_min": min(dec),
        "decode_tokens_per_s_max": max(dec), "runs_decode_tokens_per_s": [round(x, 3) for x in dec],
        "prefill_tokens_per_s": statistics.median(pre), "prefill_tokens_per_s_min": min(pre),
        "prefill_tokens_per_s_max": max(pre), "runs_prefill_tokens_per_s": [round(x, 3) for x in pre],
        "mean_active_experts_per_moe_layer": (act / pairs) if pairs else 0.0,
        "num_experts": cfg.E, "load_s": round(t_load, 2), "warmup_first_tokens": gen,
    }
    print(json.dumps(res))
    return 0


# ---------------------------------------------------------------- check

def compare(got, ref, bf16):
    """Spec §10 logit bounds; got/ref [T, V] float64 -> (ok, stats)."""
    diff = np.abs(got - ref)
    cos = (got * ref).sum(-1) / (np.linalg.norm(got, axis=-1) * np.linalg.norm(ref, axis=-1))
    top2 = np.sort(ref, -1)[:, -2:]
    sure = (top2[:, 1] - top2[:, 0]) >= 0.5
    argmax_ok = bool(np.all((got.argmax(-1) == ref.argmax(-1))[sure]))
    s = dict(max_abs=float(diff.max()), mean_abs=float(diff.mean()), min_cosine=float(cos.min()),
             argmax_ok=argmax_ok)
    ok = (s["max_abs"] <= 0.5 and s["mean_abs"] <= 0.05 and s["min_cosine"] >= 0.997 and argmax_ok
          if bf16 else s["max_abs"] <= 1e-3)
    return ok, s


def compare_routing(masks, routing, cfg, bf16):
    """masks: per MoE layer bool [T, E] from the prefill; routing: deco_reference's list."""
    ref_layers = [r for r in routing if r["kind"] == "moe"]
    pairs = diff_pairs = bad_tokens = 0
    for mk, r in zip(masks, ref_layers):
        mk = mk.numpy()
        for t, ids in enumerate(r["active_experts"]):
            want = np.zeros(cfg.E, dtype=bool)
            want[ids] = True
            nd = int((want != mk[t]).sum())
            pairs += cfg.E
            diff_pairs += nd
            if nd and r["margins"][t] >= (0.05 if bf16 else 1e-4):
                bad_tokens += 1
    frac = diff_pairs / max(pairs, 1)
    ok = len(masks) == len(ref_layers) and bad_tokens == 0 and (frac <= 0.01 if bf16 else True)
    return ok, dict(pairs_different=diff_pairs, pairs=pairs, fraction=frac,
                    tokens_over_margin_different=bad_tokens)


def check(a):
    try:
        cfg, w64, V = R.load_checkpoint(a.model)
    except R.RefError as e:
        raise BenchError(str(e))
    check_supported(cfg)
    tokens = make_prompt(a.check_tokens, V, a.seed)
    ref, routing = R.forward(cfg, w64, tokens)
    w32 = {k: v.astype(np.float32) for k, v in w64.items()}  # exact: stored as f32/bf16/f16
    del w64
    dtypes = [a.dtype] if a.dtype else ["f32", "bf16"]
    impls = [a.moe] if a.moe else ["gather", "loop"]
    all_ok, results = True, []
    ids = torch.tensor(tokens, dtype=torch.long)
    split = len(tokens) // 2
    with torch.inference_mode():
        for dn in dtypes:
            for impl in impls:
                model = TorchDeco(cfg, w32, V, DTYPES[dn], impl, max_len=len(tokens))
                model.record = []
                full = model.forward(ids, 0, all_logits=True).double().numpy()
                masks, model.record = model.record, None
                rows = [model.forward(ids[:split], 0, all_logits=True)]
                for p in range(split, len(tokens)):  # decode through the KV cache
                    rows.append(model.forward(ids[p:p + 1], p))
                dec = torch.cat(rows).double().numpy()
                bf16 = dn == "bf16"
                ok1, s1 = compare(full, ref, bf16)
                ok2, s2 = compare(dec, ref, bf16)
                ok3, s3 = compare_routing(masks, routing, cfg, bf16)
                ok = ok1 and ok2 and ok3
                all_ok &= ok
                results.append(dict(dtype=dn, moe_impl=impl, ok=ok, prefill=s1,
                                    prefill_then_decode=s2, routing=s3))
                print(f"torch_eager_bench --check {dn:4s} {impl:6s}: {'ok  ' if ok else 'FAIL'} "
                      f"prefill max|d|={s1['max_abs']:.3e} mean|d|={s1['mean_abs']:.3e} "
                      f"cos>={s1['min_cosine']:.6f}; split max|d|={s2['max_abs']:.3e}; routing "
                      f"{s3['pairs_different']}/{s3['pairs']} pairs differ", file=sys.stderr)
    print(json.dumps({"check": "torch_eager_vs_deco_reference", "model": os.path.abspath(a.model),
                      "tokens": len(tokens), "torch_version": torch.__version__, "ok": all_ok,
                      "results": results}))
    return 0 if all_ok else 1


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", required=True, help="checkpoint directory")
    ap.add_argument("--dtype", choices=sorted(DTYPES), help="weights and compute (bench default bf16; "
                    "--check default: both)")
    ap.add_argument("--moe", choices=["gather", "loop"], help="sparse MoE implementation (bench "
                    "default gather; --check default: both)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--seed", type=int, default=1234, help="prompt ids (run r uses seed + r)")
    ap.add_argument("--check", action="store_true", help="compare logits with deco_reference.py")
    ap.add_argument("--check-tokens", type=int, default=24)
    a = ap.parse_args(argv)
    if a.threads < 1 or a.runs < 1 or a.prompt_len < 1 or a.new_tokens < 0 or a.check_tokens < 2:
        ap.error("--threads, --runs, --prompt-len must be >= 1, --check-tokens >= 2")
    torch.set_num_threads(a.threads)
    try:
        return check(a) if a.check else bench(a)
    except BenchError as e:
        print(f"torch_eager_bench: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
