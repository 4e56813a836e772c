#!/usr/bin/python3
"""moeserve's LapSum router (spec softmoe.md §2-§3) against an independent solver.

  lapsum_router_test.py --probe build/tests/reference/lapsum_probe --workdir DIR

The reference finds the threshold τ with Σ F((z − τ)/α) = k by bisection in float64 (a
different method from the engine's sorted closed form) and truncates per §3 with θ0 = c·k/n
rounded to fp32. Cases: random logits (several spreads, near-ties, huge gaps, +1000 offsets)
for n in {4, 8, 32, 64, 128}, k over its domain (0, n), α in {0.1, 1, 10}. Passes when, for
every case: every p within 2e-5 of the reference; |Σp − k| <= 2e-5·max(1, k/32); the router's
active set equals the reference's except for experts whose weight lies within 1e-5 of the
threshold; active weights are exactly the probe's p and ≥ 1 expert is active; and logits
offset by +1000 (exact in fp32) give bit-identical p.
"""
import argparse
import json
import math
import os
import subprocess
import sys

import numpy as np


def laplace_cdf(t):
    return np.where(t <= 0, 0.5 * np.exp(np.minimum(t, 0)), 1.0 - 0.5 * np.exp(-np.maximum(t, 0)))


def reference(z, k, alpha, c, gamma):
    z = np.asarray(z, dtype=np.float64)
    n = len(z)
    lo, hi = z.min() - 60 * alpha, z.max() + 60 * alpha
    for _ in range(400):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if laplace_cdf((z - mid) / alpha).sum() > k:
            lo = mid
        else:
            hi = mid
    tau = 0.5 * (lo + hi)
    p = laplace_cdf((z - tau) / alpha)
    cap = min(math.ceil(gamma * k), n)
    theta0 = float(np.float32(c * k / n))
    srt = np.sort(p)[::-1]
    theta = min(max(theta0, srt[cap - 1]), srt[0])
    return p, tau, theta, set(np.nonzero(p >= theta)[0].tolist())


def make_cases(seed):
    rng = np.random.default_rng(seed)
    cases = []
    for n in (4, 8, 32, 64, 128):
        ks = sorted({1e-3, 0.3, 1.0, 1.5, 2.0, 2.7, n / 2, n - 1.0, n - 0.25, n - 1e-3})
        ks = [k for k in ks if 0 < k < n]
        for alpha in (0.1, 1.0, 10.0):
            for k in ks:
                for kind in ("normal", "wide", "ties", "gaps", "offset"):
                    if kind == "normal":
                        z = rng.standard_normal(n) * 2.0
                    elif kind == "wide":
                        z = rng.standard_normal(n) * 30.0
                    elif kind == "ties":  # few distinct values: many exact ties
                        z = rng.integers(-3, 4, n).astype(np.float64) * 0.5
                    elif kind == "gaps":  # adjacent gaps >> 87·α: exponentials underflow
                        z = np.sort(rng.permutation(n)).astype(np.float64) * 150.0 * alpha
                        rng.shuffle(z)
                    else:  # values on a 1/256 grid, so z + 1000 is exact in fp32
                        z = np.round(rng.standard_normal(n) * 512) / 256
                    z = z.astype(np.float32)
                    cases.append(dict(logits=[float(v) for v in z], k=float(k), alpha=alpha, kind=kind,
                                      c=1.8, gamma=2.0))
                    if kind == "offset":
                        cases.append(dict(cases[-1], logits=[float(np.float32(v + 1000.0)) for v in z],
                                          kind="offset+1000", base=len(cases) - 1))
    # Non-default truncation coefficients, including c·k/n > 1 (θ = max p: one expert).
    for c, gamma in ((0.0, 2.0), (1.8, 4.0), (5.0, 1.0), (20.0, 2.0)):
        for n in (8, 32):
            z = (rng.standard_normal(n) * 2.0).astype(np.float32)
            cases.append(dict(logits=[float(v) for v in z], k=1.5, alpha=1.0, kind=f"c{c}g{gamma}", c=c,
                              gamma=gamma))
    return cases


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--probe", required=True)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args(argv)
    os.makedirs(a.workdir, exist_ok=True)
    cases = make_cases(a.seed)
    inp, outp = os.path.join(a.workdir, "cases.json"), os.path.join(a.workdir, "probe.json")
    with open(inp, "w") as f:
        json.dump({"cases": cases}, f)
    r = subprocess.run([a.probe, inp, outp], capture_output=True, text=True)
    if r.returncode != 0:
        print(f"lapsum_router_test: FAIL: probe exited {r.returncode}: {r.stderr[-2000:]}")
        return 1
    got = json.load(open(outp))["cases"]
    fails, worst_p, worst_sum, near_tie_diffs = [], 0.0, 0.0, 0
    for i, (case, g) in enumerate(zip(cases, got)):
        tag = f"case {i} (n={len(case['logits'])} k={case['k']} alpha={case['alpha']} {case['kind']})"
        p_ref, tau_ref, theta_ref, set_ref = reference(case["logits"], case["k"], case["alpha"], case["c"],
                                                      case["gamma"])
        p = np.asarray(g["p"], dtype=np.float64)
        if not np.isfinite(p).all():
            fails.append(f"{tag}: non-finite p")
            continue
        err = float(np.abs(p - p_ref).max())
        worst_p = max(worst_p, err)
        if err > 2e-5:
            fails.append(f"{tag}: max |p - p_ref| = {err:.3g} > 2e-5")
        serr = abs(float(p.sum()) - case["k"])
        worst_sum = max(worst_sum, serr / max(1.0, case["k"] / 32))
        if serr > 2e-5 * max(1.0, case["k"] / 32):
            fails.append(f"{tag}: |sum p - k| = {serr:.3g}")
        active = set(g["active"])
        if g["num_active"] != len(g["active"]) or not active:
            fails.append(f"{tag}: num_active {g['num_active']} for active set {g['active']}")
        diff = active ^ set_ref
        if diff:
            bad = [e for e in diff if abs(p_ref[e] - theta_ref) > 1e-5]
            if bad:
                fails.append(f"{tag}: active {sorted(active)} vs reference {sorted(set_ref)}; "
                             f"experts {bad} are not within 1e-5 of theta {theta_ref:.8g}")
            else:
                near_tie_diffs += 1
        if g["active"] != sorted(g["active"]) or any(g["weights"][j] != g["p"][e]
                                                     for j, e in enumerate(g["active"])):
            fails.append(f"{tag}: active ids not ascending or weights are not the soft top-k p")
        if "base" in case and g["p"] != got[case["base"]]["p"]:
            fails.append(f"{tag}: p differs from the un-offset logits (shift invariance)")
        if "base" in case and g["active"] != got[case["base"]]["active"]:
            fails.append(f"{tag}: active set differs from the un-offset logits")
    for f in fails[:20]:
        print("  FAIL: " + f)
    print(f"lapsum_router_test: {len(cases)} cases, max|dp| {worst_p:.3g}, max|sum p - k| {worst_sum:.3g}, "
          f"near-threshold set differences {near_tie_diffs}: {'PASS' if not fails else f'{len(fails)} FAILED'}")
    return 0 if not fails else 1


if __name__ == "__main__":
    sys.exit(main())
