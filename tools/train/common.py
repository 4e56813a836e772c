"""Pieces shared by the DECO and SoftMoE trainers: RMSNorm, RoPE attention, SwiGLU, the
token stream, the LR schedule, evaluation and bf16 export helpers. Layouts follow the specs
(deco.md §3, softmoe.md §7.2.3): weights are [out, in], RoPE is rotate-half, GQA maps head j
to group j // (n_h / n_g)."""
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "py"))
import safetensors_io as st  # noqa: E402


def start_run(a, presets):
    """Fills the arguments left unset from the chosen preset, makes torch single-seeded and
    deterministic, creates the output folder; returns the start time."""
    for k, v in presets[a.preset].items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    torch.use_deterministic_algorithms(True)
    os.makedirs(a.out, exist_ok=True)
    return time.time()


def write_report(out, report, trainer, t0):
    """Writes out/training_report.json and says how long the run took."""
    with open(os.path.join(out, "training_report.json"), "w") as f:
        json.dump(report, f, indent=1)
        f.write("\n")
    print(f"{trainer}: wrote {out} in {(time.time() - t0) / 60:.1f} min", flush=True)


def linear(out_f, in_f, std):
    lin = nn.Linear(in_f, out_f, bias=False)
    nn.init.normal_(lin.weight, 0.0, std)
    return lin


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_tables(T, hd, theta):
    inv = theta ** (-torch.arange(0, hd, 2, dtype=torch.float32) / hd)
    ang = torch.arange(T, dtype=torch.float32)[:, None] * inv[None, :]
    ang = torch.cat([ang, ang], dim=-1)
    return ang.cos(), ang.sin()


def rotate(x, cos, sin):  # x [B, heads, T, hd]
    h = x.shape[-1] // 2
    return x * cos + torch.cat([-x[..., h:], x[..., :h]], dim=-1) * sin


class Attention(nn.Module):
    def __init__(self, H, n_h, n_g, std, out_std):
        super().__init__()
        self.n_h, self.n_g, self.hd = n_h, n_g, H // n_h
        self.q_proj = linear(n_h * self.hd, H, std)
        self.k_proj = linear(n_g * self.hd, H, std)
        self.v_proj = linear(n_g * self.hd, H, std)
        self.o_proj = linear(H, n_h * self.hd, out_std)

    def forward(self, a, cos, sin):
        B, T, _ = a.shape
        q = self.q_proj(a).view(B, T, self.n_h, self.hd).transpose(1, 2)
        k = self.k_proj(a).view(B, T, self.n_g, self.hd).transpose(1, 2)
        v = self.v_proj(a).view(B, T, self.n_g, self.hd).transpose(1, 2)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        rep = self.n_h // self.n_g
        if rep > 1:
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        s = (q @ k.transpose(-1, -2)) / math.sqrt(self.hd)
        mask = torch.ones(T, T, dtype=torch.bool).triu(1)
        p = s.masked_fill(mask, float("-inf")).softmax(-1)
        return self.o_proj((p @ v).transpose(1, 2).reshape(B, T, -1))


class SwiGLU(nn.Module):
    def __init__(self, H, width, std, out_std):
        super().__init__()
        self.gate_proj = linear(width, H, std)
        self.up_proj = linear(width, H, std)
        self.down_proj = linear(H, width, out_std)

    def forward(self, m):
        return self.down_proj(F.silu(self.gate_proj(m)) * self.up_proj(m))


# ---------------------------------------------------------------- data

def stream(docs):
    """Documents as one id stream: BOS doc EOS BOS doc EOS ... (spec deco.md §7)."""
    out = []
    for d in docs:
        out.append(1)
        out.extend(d)
        out.append(2)
    return torch.tensor(out, dtype=torch.long)


def batches(data, batch, seq, gen):
    """Random windows of seq+1 tokens; `gen` is a seeded torch.Generator."""
    starts = torch.randint(0, len(data) - seq - 1, (batch,), generator=gen)
    w = torch.stack([data[s:s + seq + 1] for s in starts.tolist()])
    return w[:, :-1], w[:, 1:]


def lr_at(step, steps, peak, warmup, floor=0.1):
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t)))


@torch.no_grad()
def evaluate(model, docs, seq, max_tokens=None):
    """Held-out NLL per predicted token over whole documents (each document from its BOS,
    truncated to seq tokens; the EOS is predicted), plus the model's activation stats."""
    model.eval()
    nll, n = 0.0, 0
    stats = None
    for d in docs:
        ids = torch.tensor(([1] + d + [2])[:seq + 1])
        logits, st_ = model(ids[None, :-1], collect=True)
        nll += F.cross_entropy(logits[0].float(), ids[1:], reduction="sum").item()
        n += len(ids) - 1
        stats = st_ if stats is None else [a + b for a, b in zip(stats, st_)]
        if max_tokens and n >= max_tokens:
            break
    model.train()
    return nll / n, n, stats


# ---------------------------------------------------------------- export

def bf16_round(t):
    """float32 tensor -> float32 values representable in bf16 (round to nearest even)."""
    return torch.from_numpy(st.bf16_bits_to_fp32(st.fp32_to_bf16_bits(
        t.detach().float().contiguous().numpy())))


def write_safetensors(out_dir, tensors, dtype):
    """tensors: list of (name, float32 tensor, forced dtype or None)."""
    specs = [(n, forced or dtype, tuple(t.shape)) for n, t, forced in tensors]
    values = {n: t.detach().float().contiguous().numpy() for n, t, _ in tensors}
    st.write_model(out_dir, specs, lambda n: values[n], shards=1, metadata={"format": "pt"})
