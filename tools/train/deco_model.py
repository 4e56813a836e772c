"""A trainable DECO (BlockFFN-v2) decoder in torch, with parameter names equal to the export
names of spec deco.md §1.2, so export is a rename-free dump of the state dict.

DECO layer (spec §3.3), as trained: fp32 ReLU router -> expert-wise scale `simple` (per-expert
learnable weight, init 0.1) -> non-gated experts with NormSiLU ("withmean": centre over all
E·d units, RMS per expert block with one shared [d] gain) -> plus an always-on SwiGLU shared
expert. Every expert is computed densely here (training is small); inactive experts get
weight exactly 0, so the math equals the sparse serving path.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from common import Attention, RMSNorm, SwiGLU, linear, rope_tables


class RouterNorm(nn.Module):
    def __init__(self, E, init):
        super().__init__()
        self.weight = nn.Parameter(torch.full((E,), init))


class NormSiLU(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.rms_norm = RMSNorm(d, eps)

    def forward(self, u, E):  # u [..., E*d]
        c = u - u.mean(-1, keepdim=True)             # mean over all E*d units of the token
        c = c.view(*u.shape[:-1], E, -1)
        return F.silu(self.rms_norm(c)).flatten(-2)  # RMS per expert block


class DecoMLP(nn.Module):
    def __init__(self, cfg, std, out_std):
        super().__init__()
        H, E, d, S = cfg["hidden_size"], cfg["num_experts"], cfg["moe_ffn_hidden_size"], \
            cfg["moe_shared_expert_intermediate_size"]
        self.E = E
        # N(0, 1/H) rows on RMS-normed inputs: logits ~N(0,1), half the experts on at start.
        self.moe_router = linear(E, H, H ** -0.5)
        self.router_norm = RouterNorm(E, cfg["router_norm_init_var"])
        self.expert_up_proj = linear(E * d, H, std)
        self.expert_down_proj = linear(H, E * d, out_std)
        self.expert_act = NormSiLU(d, cfg["norm_epsilon"])
        self.shared_experts = SwiGLU(H, S, std, out_std)

    def forward(self, m):
        logits = self.moe_router(m.float())          # fp32 router (spec §3.5)
        r = F.relu(logits)
        g = r * self.router_norm.weight              # `simple` expert-wise scaling
        h = self.expert_act(self.expert_up_proj(m), self.E)
        d = h.shape[-1] // self.E
        y = self.expert_down_proj((h.view(*h.shape[:-1], self.E, d) * g[..., None]).flatten(-2))
        return y + self.shared_experts(m), r, logits


class Layer(nn.Module):
    def __init__(self, cfg, moe, std, out_std):
        super().__init__()
        H, eps = cfg["hidden_size"], cfg["norm_epsilon"]
        self.input_layernorm = RMSNorm(H, eps)
        self.self_attn = Attention(H, cfg["num_attention_heads"], cfg["num_query_groups"],
                                   std, out_std)
        self.post_attention_layernorm = RMSNorm(H, eps)
        self.moe = moe
        self.mlp = DecoMLP(cfg, std, out_std) if moe else \
            SwiGLU(H, cfg["ffn_hidden_size"], std, out_std)

    def forward(self, x, cos, sin):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        m = self.post_attention_layernorm(x)
        if not self.moe:
            return x + self.mlp(m), None, None
        y, r, logits = self.mlp(m)
        return x + y, r, logits


class Trunk(nn.Module):
    def __init__(self, cfg, pattern, std, out_std):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg["vocab_size"], cfg["hidden_size"])
        nn.init.normal_(self.embed_tokens.weight, 0.0, std)
        self.layers = nn.ModuleList(Layer(cfg, p, std, out_std) for p in pattern)
        self.norm = RMSNorm(cfg["hidden_size"], cfg["norm_epsilon"])


class DecoLM(nn.Module):
    """forward(ids [B, T]) -> (logits, aux). aux: the list of ReLU router outputs r [B, T, E]
    per MoE layer (for the sparsity regulariser), or with collect=True per-layer
    [active pairs, tokens] counts (spec §5: active iff router logit > 0)."""

    def __init__(self, cfg, pattern, std=0.02):
        super().__init__()
        self.cfg = cfg
        out_std = std / (2 * cfg["num_layers"]) ** 0.5
        self.model = Trunk(cfg, pattern, std, out_std)
        self.lm_head = linear(cfg["vocab_size"], cfg["hidden_size"], std)

    def forward(self, ids, collect=False):
        T = ids.shape[1]
        hd = self.cfg["hidden_size"] // self.cfg["num_attention_heads"]
        cos, sin = rope_tables(T, hd, self.cfg["rope_theta"])
        x = self.model.embed_tokens(ids)
        aux = []
        for layer in self.model.layers:
            x, r, logits = layer(x, cos, sin)
            if r is None:
                continue
            if collect:
                aux.append(torch.tensor([(logits > 0).sum().item(), logits[..., 0].numel()],
                                        dtype=torch.float64))
            else:
                aux.append(r)
        return self.lm_head(self.model.norm(x)), aux
