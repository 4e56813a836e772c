#!/usr/bin/python3
"""Train the demo DECO model from scratch on the fortunes corpus and export it in the DECO
export layout (config.json with Megatron keys + model.safetensors + tokenizer.model).

  /usr/bin/python3 tools/train/train_deco.py --out models/deco-demo            # shipped model
  /usr/bin/python3 tools/train/train_deco.py --out /tmp/t --preset tiny --steps 20   # smoke

Sparsity: every MoE layer's ReLU router output r is L1-penalised with one coefficient λ shared
by all layers, and λ is multiplied by --reg-rate after each step when the pooled activation
ratio (active router logits / (tokens·E), spec deco.md §5) is above --target and divided by
it when below: a bang-bang controller that holds activation near the target (~20 %), the
role of DECO's adaptive regulariser. Deterministic for a fixed --seed and --threads.
"""
import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))
sys.path.insert(0, HERE)
import gen_tiny_model as gen  # noqa: E402
from common import batches, bf16_round, evaluate, lr_at, start_run, write_report, write_safetensors  # noqa: E402
from data import prepare  # noqa: E402
from deco_model import DecoLM  # noqa: E402

PRESETS = {
    # shipped demo (models/deco-demo): 1.76 M parameters, ~45 min on one core (OpenBLAS)
    "demo": dict(layers=6, hidden=128, heads=4, groups=2, ffn=384, experts=16, width=32,
                 shared=64, vocab=2048, seq=256, batch=8, steps=3000),
    # CTest smoke: seconds
    "tiny": dict(layers=3, hidden=32, heads=2, groups=1, ffn=64, experts=8, width=8,
                 shared=16, vocab=400, seq=32, batch=4, steps=30),
}


def export_config(a, V):
    sets = dict(num_layers=a.layers, hidden_size=a.hidden, num_attention_heads=a.heads,
                num_query_groups=a.groups, ffn_hidden_size=a.ffn, num_experts=a.experts,
                moe_ffn_hidden_size=a.width, moe_shared_expert_intermediate_size=a.shared,
                max_position_embeddings=a.seq)
    # gen_tiny_model writes exactly what the upstream exporter writes (Megatron keys, stale
    # HF keys included), so the engine sees a real-looking DECO config.
    cfg = gen.build_config("deco", "small", V, sets)
    model_cfg = dict(cfg, vocab_size=V)
    return cfg, model_cfg


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--preset", default="demo", choices=list(PRESETS))
    for k, v in PRESETS["demo"].items():
        ap.add_argument(f"--{k}", type=int, help=f"override the preset (demo: {v})")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--target", type=float, default=0.2, help="target activation ratio")
    ap.add_argument("--reg-init", type=float, default=1e-4)
    ap.add_argument("--reg-rate", type=float, default=1.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "f32"])
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--max-docs", type=int, help="use only the first N documents (tests)")
    ap.add_argument("--tokenizer", help="reuse this tokenizer.model instead of training one")
    a = ap.parse_args(argv)
    t0 = start_run(a, PRESETS)

    data, test_docs, V = prepare(a.out, a.vocab, a.seed, a.max_docs, a.tokenizer)
    cfg, mcfg = export_config(a, V)
    pattern = gen.moe_pattern(cfg)
    model = DecoLM(mcfg, pattern)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"train_deco: {n_params} parameters, vocab {V}, {len(data)} train tokens, "
          f"{sum(map(len, test_docs))} test tokens", flush=True)

    decay = [p for p in model.parameters() if p.dim() == 2]
    rest = [p for p in model.parameters() if p.dim() != 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.weight_decay},
                             {"params": rest, "weight_decay": 0.0}], lr=a.lr, betas=(0.9, 0.95))
    gen_data = torch.Generator().manual_seed(a.seed)
    lam = a.reg_init
    curve, window = [], []
    for step in range(a.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, a.steps, a.lr, a.warmup)
        x, y = batches(data, a.batch, a.seq, gen_data)
        logits, rs = model(x)
        lm = F.cross_entropy(logits.reshape(-1, V), y.reshape(-1))
        reg = sum(r.mean() for r in rs)
        loss = lm + lam * reg
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            per_layer = [(r > 0).float().mean().item() for r in rs]
        ratio = sum(per_layer) / len(per_layer)
        lam = lam * a.reg_rate if ratio > a.target else lam / a.reg_rate
        window.append((lm.item(), ratio))
        if (step + 1) % a.log_every == 0 or step + 1 == a.steps:
            ml = sum(w[0] for w in window) / len(window)
            mr = sum(w[1] for w in window) / len(window)
            curve.append(dict(step=step + 1, loss=round(ml, 4), activation=round(mr, 4),
                              reg_coeff=float(f"{lam:.4g}")))
            window = []
            el = time.time() - t0
            print(f"train_deco: step {step + 1}/{a.steps} loss {ml:.4f} act {mr:.3f} "
                  f"[{' '.join(f'{v:.2f}' for v in per_layer)}] lambda {lam:.3g} "
                  f"{el / 60:.1f} min", flush=True)
    train_s = time.time() - t0

    # Export: the stored dtype is what the engine sees, so measure the rounded weights too.
    if a.dtype == "bf16":
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(bf16_round(p))
    nll, n_tok, stats = evaluate(model, test_docs, a.seq)
    act = {str(i): round(s[0].item() / (s[1].item() * a.experts), 4)
           for i, s in zip([i for i, p in enumerate(pattern) if p], stats)}
    print(f"train_deco: held-out nll {nll:.4f} ppl {torch.tensor(nll).exp():.2f} over {n_tok} "
          f"tokens; activation per layer {act}", flush=True)
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    dt = "BF16" if a.dtype == "bf16" else "F32"
    write_safetensors(a.out, [(n, t, None) for n, t in model.state_dict().items()], dt)
    report = dict(
        model="DECO", preset=a.preset, parameters=n_params, vocab=V, seed=a.seed,
        threads=a.threads, steps=a.steps, batch=a.batch, seq=a.seq, lr=a.lr,
        tokens_seen=a.steps * a.batch * a.seq, train_tokens=len(data),
        target_activation=a.target, train_seconds=round(train_s, 1),
        torch_version=torch.__version__, dtype=a.dtype,
        corpus="Debian package `fortunes` (BSD licence); test = crc32(text) % 20 == 0",
        held_out=dict(tokens=n_tok, nll=round(nll, 4), perplexity=round(float(
            torch.tensor(nll).exp()), 3), activation_per_layer=act,
            activation_mean=round(sum(act.values()) / len(act), 4)),
        loss_curve=curve)
    write_report(a.out, report, "train_deco", t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
