"""LapSum soft top-k (spec softmoe.md §2.2) and its truncation (§3) in torch, differentiable in
the logits and in k by plain autograd through the closed-form threshold: the branch index m is
piecewise constant, everything else is smooth. Every torch.where branch is fed clamped inputs
so that the branch not taken never produces inf/NaN (whose zero-weighted gradient would still
poison the backward pass)."""
import math

import torch

TINY = 1e-30


def laplace_cdf(t):
    return torch.where(t <= 0, 0.5 * torch.exp(t.clamp(max=0)),
                       1.0 - 0.5 * torch.exp(-t.clamp(min=0)))


def soft_topk(z, k, alpha=1.0):
    """z [N, n] logits, k a 0-d tensor in (0, n) -> p [N, n], sum_i p = k per row."""
    n = z.shape[-1]
    u, _ = torch.sort(z / alpha, dim=-1)                               # ascending
    logB = torch.logcumsumexp(u, -1) - u                               # B_j = sum_{i<=j} e^{u_i-u_j}
    logA = u + torch.logcumsumexp(-u.flip(-1), -1).flip(-1)            # A_j = sum_{i>=j} e^{u_j-u_i}
    A, B = logA.exp(), logB.exp()
    j = torch.arange(n, dtype=z.dtype)                                 # (j-1) for 1-based j
    V = j + 0.5 + 0.5 * (A - B)
    w = n - k
    m = (V < w).sum(-1, keepdim=True)                                  # [N, 1] in 0..n
    lo = (m - 1).clamp(0, n - 1)                                       # 0-based index of u_m
    hi = m.clamp(0, n - 1)                                             # 0-based index of u_{m+1}
    u_lo, u_hi = u.gather(-1, lo), u.gather(-1, hi)
    B_lo, A_hi = B.gather(-1, lo), A.gather(-1, hi)
    e = w - m.to(z.dtype)
    D = torch.sqrt(e * e + A_hi * B_lo * torch.exp((u_lo - u_hi).clamp(max=0)))
    b_pos = u_hi + torch.log((e + D).clamp(min=TINY)) - torch.log(A_hi)
    b_neg = u_lo + torch.log(B_lo) - torch.log((D - e).clamp(min=TINY))
    b_mid = 0.5 * (u_lo + u_hi) + 0.5 * torch.log(B_lo / A_hi)
    # e = 0 uses b_pos too (equal there, and it keeps d b / d k); b_mid only when D underflows.
    b = torch.where(e >= 0, torch.where(D > 0, b_pos, b_mid), b_neg)
    b_first = u[..., :1] + torch.log((2 * w / A[..., :1]).clamp(min=TINY))
    b_last = u[..., -1:] + torch.log((B[..., -1:] / (2 * k)).clamp(min=TINY))
    b = torch.where(m == 0, b_first, torch.where(m == n, b_last, b))
    return laplace_cdf(z / alpha - b)


def truncate(p, k, c=1.8, gamma=2.0):
    """Active mask of §3: p >= clamp(c·k/n, cap-th largest p, max p), cap = min(ceil(γk), n).
    k is a Python float here (a constant for this step; the mask carries no gradient)."""
    n = p.shape[-1]
    cap = min(math.ceil(gamma * k), n)
    top = torch.topk(p.detach(), cap, dim=-1).values
    theta = torch.clamp(torch.full_like(top[..., :1], c * k / n), min=top[..., -1:],
                        max=top[..., :1])
    return p.detach() >= theta


def budget_k(eta, K):
    """k_l = 1 + (K - L) softmax(eta)_l (spec §5)."""
    return 1.0 + (K - eta.numel()) * torch.softmax(eta, 0)
