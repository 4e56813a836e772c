#!/usr/bin/python3
"""Train the demo SoftMoE model (LapSum soft top-k routing, learned per-layer k under a
global budget K) on the fortunes corpus and export it in the server format of spec
softmoe.md §7.2 (config.json + model.safetensors, plus the tokenizer.model).

  /usr/bin/python3 tools/train/train_softmoe.py --out models/softmoe-demo
  /usr/bin/python3 tools/train/train_softmoe.py --out /tmp/s --preset tiny

Losses: next-token cross-entropy + a Switch-style load-balancing term (coefficient --lb).
The budget logits η get their own (larger) learning rate and no weight decay; the gradient
reaches them only through k in the LapSum operator, so the layers compete for the budget.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from common import batches, bf16_round, evaluate, lr_at, start_run, write_report, write_safetensors  # noqa: E402
from data import prepare  # noqa: E402
from softmoe_model import SoftMoELM  # noqa: E402

PRESETS = {
    "demo": dict(layers=4, hidden=128, heads=4, groups=2, experts=16, width=32, vocab=2048,
                 seq=256, batch=8, steps=1500),
    "tiny": dict(layers=2, hidden=32, heads=2, groups=1, experts=4, width=16, vocab=400,
                 seq=32, batch=4, steps=30),
}


def make_config(a, V):
    return {
        "architectures": ["SoftMoEForCausalLM"], "model_type": "softmoe",
        "hidden_size": a.hidden, "num_layers": a.layers, "num_attention_heads": a.heads,
        "num_query_groups": a.groups, "vocab_size": V, "max_position_embeddings": a.seq,
        "norm_type": "rmsnorm", "norm_epsilon": 1e-5, "position_embedding_type": "rope",
        "rotary_base": 10000.0, "add_qkv_bias": False, "add_bias_linear": False,
        "tie_word_embeddings": False, "num_experts": a.experts, "moe_ffn_hidden_size": a.width,
        "expert_activation": "swiglu", "moe_layer_freq": 1,
        "moe_router_lapsum_scale": 1.0, "moe_router_threshold_coeff": 1.8,
        "moe_router_cap_coeff": 2.0, "moe_router_budget": float(a.budget_per_layer * a.layers),
    }


def k_from_eta64(eta, K):
    """The loader's k_l (spec §7.2.1): float64 softmax of the stored float32 η."""
    e = np.asarray(eta, dtype=np.float32).astype(np.float64)
    p = np.exp(e - e.max())
    return [float(v) for v in 1.0 + (K - len(e)) * p / p.sum()]


def balance_loss(p, active, k):
    """Switch-style: n · Σ_e (share of assignments to e) · (mean weight of e / k)."""
    n = p.shape[-1]
    f = active.float().mean(0) / active.float().sum(-1).mean()
    return n * (f * (p.mean(0) / k)).sum()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--preset", default="demo", choices=list(PRESETS))
    for k, v in PRESETS["demo"].items():
        ap.add_argument(f"--{k}", type=int, help=f"override the preset (demo: {v})")
    ap.add_argument("--budget-per-layer", type=float, default=2.0, help="K / L")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--eta-lr", type=float, default=1e-2)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--lb", type=float, default=0.01, help="load-balancing loss coefficient")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "f32"])
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--max-docs", type=int)
    ap.add_argument("--tokenizer", help="reuse this tokenizer.model instead of training one")
    a = ap.parse_args(argv)
    t0 = start_run(a, PRESETS)

    data, test_docs, V = prepare(a.out, a.vocab, a.seed, a.max_docs, a.tokenizer)
    cfg = make_config(a, V)
    model = SoftMoELM(cfg)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"train_softmoe: {n_params} parameters, vocab {V}, budget K={cfg['moe_router_budget']}",
          flush=True)
    eta = model.model.moe_budget.eta
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2 and p is not eta]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": a.weight_decay, "peak": a.lr},
                             {"params": rest, "weight_decay": 0.0, "peak": a.lr},
                             {"params": [eta], "weight_decay": 0.0, "peak": a.eta_lr}],
                            lr=a.lr, betas=(0.9, 0.95))
    gen_data = torch.Generator().manual_seed(a.seed)
    curve, window = [], []
    for step in range(a.steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, a.steps, g["peak"], a.warmup)
        x, y = batches(data, a.batch, a.seq, gen_data)
        logits, aux = model(x)
        lm = F.cross_entropy(logits.reshape(-1, V), y.reshape(-1))
        ks = model.k_per_layer()
        lb = sum(balance_loss(p, act, k) for (p, act), k in zip(aux, ks)) / len(aux)
        loss = lm + a.lb * lb
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        window.append((lm.item(), [act.sum(-1).float().mean().item() for _, act in aux]))
        if (step + 1) % a.log_every == 0 or step + 1 == a.steps:
            ml = sum(w[0] for w in window) / len(window)
            ae = np.mean([w[1] for w in window], axis=0)
            kl = [round(v, 3) for v in model.k_per_layer().tolist()]
            curve.append(dict(step=step + 1, loss=round(ml, 4), k_per_layer=kl,
                              active_per_layer=[round(float(v), 3) for v in ae]))
            window = []
            print(f"train_softmoe: step {step + 1}/{a.steps} loss {ml:.4f} k {kl} active "
                  f"{[round(float(v), 2) for v in ae]} {(time.time() - t0) / 60:.1f} min",
                  flush=True)
    train_s = time.time() - t0

    with torch.no_grad():
        eta.copy_(eta.float())  # η stays F32 on disk; k below is what the loader computes
        if a.dtype == "bf16":
            for n_, p in model.named_parameters():
                if p is not eta:
                    p.copy_(bf16_round(p))
    k_list = k_from_eta64(eta.detach().numpy(), cfg["moe_router_budget"])
    cfg["moe_router_k_per_layer"] = k_list  # cross-check copy of what η implies (§7.2.1)
    nll, n_tok, stats = evaluate(model, test_docs, a.seq)
    act = {str(i): round(s[0].item() / s[1].item(), 3) for i, s in enumerate(stats)}
    print(f"train_softmoe: held-out nll {nll:.4f} ppl {np.exp(nll):.2f} over {n_tok} tokens; "
          f"learned k {[round(k, 3) for k in k_list]}; mean active experts {act}", flush=True)
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    tensors = []
    for name, t in model.state_dict().items():
        if ".mlp.experts." in name:
            name += ".weight"  # stacked expert parameters are bare tensors in torch
        tensors.append((name, t, "F32" if name == "model.moe_budget.eta" else None))
    write_safetensors(a.out, tensors, "BF16" if a.dtype == "bf16" else "F32")
    report = dict(
        model="SoftMoE", preset=a.preset, parameters=n_params, vocab=V, seed=a.seed,
        threads=a.threads, steps=a.steps, batch=a.batch, seq=a.seq, lr=a.lr, eta_lr=a.eta_lr,
        budget_K=cfg["moe_router_budget"], train_seconds=round(train_s, 1),
        torch_version=torch.__version__, dtype=a.dtype,
        corpus="Debian package `fortunes` (BSD licence); test = crc32(text) % 20 == 0",
        learned_k_per_layer=[round(k, 4) for k in k_list],
        eta=[float(v) for v in eta.detach().numpy()],
        held_out=dict(tokens=n_tok, nll=round(nll, 4), perplexity=round(float(np.exp(nll)), 3),
                      mean_active_experts_per_layer=act),
        loss_curve=curve)
    write_report(a.out, report, "train_softmoe", t0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
