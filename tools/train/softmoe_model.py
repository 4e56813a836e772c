"""A trainable SoftMoE decoder (spec softmoe.md) in torch: RMSNorm + RoPE trunk, every layer
MoE, SwiGLU experts, LapSum soft top-k routing with truncation, and a learned per-layer budget
k_l = 1 + (K - L)·softmax(η)_l. Parameter names equal the §7.2.2 tensor names."""
import torch
import torch.nn as nn
import torch.nn.functional as F

import lapsum
from common import Attention, RMSNorm, linear, rope_tables


class Experts(nn.Module):
    """n stacked SwiGLU experts; weights [n, F, H] / [n, H, F] as exported."""

    def __init__(self, n, H, width, std, out_std):
        super().__init__()
        self.up_proj = nn.Parameter(torch.randn(n, width, H) * std)
        self.gate_proj = nn.Parameter(torch.randn(n, width, H) * std)
        self.down_proj = nn.Parameter(torch.randn(n, H, width) * out_std)

    def forward(self, m, weights):  # m [N, H], weights [N, n] (0 for inactive experts)
        a = F.silu(torch.einsum("th,nfh->tnf", m, self.gate_proj)) * \
            torch.einsum("th,nfh->tnf", m, self.up_proj)
        return torch.einsum("tnf,nhf,tn->th", a, self.down_proj, weights)


class SoftMoEMLP(nn.Module):
    def __init__(self, cfg, std, out_std):
        super().__init__()
        H, n = cfg["hidden_size"], cfg["num_experts"]
        self.router = linear(n, H, H ** -0.5)
        self.experts = Experts(n, H, cfg["moe_ffn_hidden_size"], std, out_std)
        self.alpha = cfg["moe_router_lapsum_scale"]
        self.c, self.gamma = cfg["moe_router_threshold_coeff"], cfg["moe_router_cap_coeff"]

    def forward(self, m, k):
        shape = m.shape
        m = m.reshape(-1, shape[-1])
        z = self.router(m.float())                                     # fp32 router
        p = lapsum.soft_topk(z, k, self.alpha)
        active = lapsum.truncate(p, float(k), self.c, self.gamma)
        w = p * active                                                 # no renormalisation (§4)
        return self.experts(m, w).reshape(shape), p, active


class Layer(nn.Module):
    def __init__(self, cfg, std, out_std):
        super().__init__()
        H, eps = cfg["hidden_size"], cfg["norm_epsilon"]
        self.input_layernorm = RMSNorm(H, eps)
        self.self_attn = Attention(H, cfg["num_attention_heads"], cfg["num_query_groups"],
                                   std, out_std)
        self.post_attention_layernorm = RMSNorm(H, eps)
        self.mlp = SoftMoEMLP(cfg, std, out_std)

    def forward(self, x, cos, sin, k):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        y, p, active = self.mlp(self.post_attention_layernorm(x), k)
        return x + y, p, active


class Budget(nn.Module):
    def __init__(self, L):
        super().__init__()
        self.eta = nn.Parameter(torch.zeros(L))  # uniform k at start: the layers compete


class Trunk(nn.Module):
    def __init__(self, cfg, std, out_std):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg["vocab_size"], cfg["hidden_size"])
        nn.init.normal_(self.embed_tokens.weight, 0.0, std)
        self.layers = nn.ModuleList(Layer(cfg, std, out_std) for _ in range(cfg["num_layers"]))
        self.norm = RMSNorm(cfg["hidden_size"], cfg["norm_epsilon"])
        self.moe_budget = Budget(cfg["num_layers"])


class SoftMoELM(nn.Module):
    """forward(ids) -> (logits, aux): aux is a list per layer of (p, active) for the
    load-balancing loss, or with collect=True [active pairs, tokens] counts."""

    def __init__(self, cfg, std=0.02):
        super().__init__()
        self.cfg = cfg
        out_std = std / (2 * cfg["num_layers"]) ** 0.5
        self.model = Trunk(cfg, std, out_std)
        self.lm_head = linear(cfg["vocab_size"], cfg["hidden_size"], std)

    def k_per_layer(self):
        return lapsum.budget_k(self.model.moe_budget.eta, self.cfg["moe_router_budget"])

    def forward(self, ids, collect=False):
        T = ids.shape[1]
        hd = self.cfg["hidden_size"] // self.cfg["num_attention_heads"]
        cos, sin = rope_tables(T, hd, self.cfg["rotary_base"])
        ks = self.k_per_layer()
        x = self.model.embed_tokens(ids)
        aux = []
        for layer, k in zip(self.model.layers, ks):
            x, p, active = layer(x, cos, sin, k)
            if collect:
                aux.append(torch.tensor([active.sum().item(), active.shape[0]],
                                        dtype=torch.float64))
            else:
                aux.append((p, active))
        return self.lm_head(self.model.norm(x)), aux
