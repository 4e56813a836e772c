#!/usr/bin/python3
"""tools/capacity_planner.py against numbers known independently: DECO's published sizes
(spec deco.md §6), the byte formulas, the ranking principle, presets and error handling.

  capacity_planner_test.py [--planner tools/capacity_planner.py]
"""
import argparse
import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
PLANNER = os.path.join(HERE, "..", "..", "tools", "capacity_planner.py")


def load_module(path):
    spec = importlib.util.spec_from_file_location("capacity_planner", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run(*args):
    r = subprocess.run([sys.executable, PLANNER, *args], capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout, r.stderr


def plan(*args):
    rc, out, err = run(*args, "--json")
    assert rc == 0, f"planner {args} failed: {err}"
    return json.loads(out)


class PublishedSizes(unittest.TestCase):
    # spec deco.md §6: non-embedding parameters.
    TABLE = {"0.1B": 109e6, "0.2B": 242e6, "0.5B": 533e6, "1.2B": 1188e6}

    def test_non_embedding_params_match_spec(self):
        for size, want in self.TABLE.items():
            got = plan("--shape", size)["params"]["non_embedding"]
            self.assertLess(abs(got - want) / want, 0.01, f"{size}: {got} vs {want}")

    def test_embeddings_are_2VH(self):
        p = plan("--shape", "0.5B")["params"]
        self.assertEqual(p["embedding_and_head"], 2 * 73448 * 1280)
        self.assertEqual(p["total"], p["non_embedding"] + p["embedding_and_head"])

    def test_footprint_is_bytes_times_params(self):
        r = plan("--shape", "0.2B")
        rows = {x["dtype"]: x for x in r["rows"]}
        n = r["params"]["total"]
        self.assertEqual(rows["bf16"]["weights_bytes"], 2 * n)
        self.assertEqual(rows["f16"]["weights_bytes"], 2 * n)
        self.assertEqual(rows["f32"]["weights_bytes"], 4 * n)
        # int8: one byte per matrix element plus scales, so between 1 and 1.1 bytes per parameter.
        self.assertTrue(n < rows["int8"]["weights_bytes"] < 1.1 * n)

    def test_kv_bytes_per_token(self):
        # 2 (K and V) x layers x KV groups x head dim x bytes.
        self.assertEqual(plan("--shape", "0.5B", "--kv-dtype", "f32")["kv_bytes_per_token"], 2 * 27 * 10 * 128 * 4)
        self.assertEqual(plan("--shape", "1.2B", "--kv-dtype", "bf16")["kv_bytes_per_token"], 2 * 32 * 14 * 128 * 2)
        # The default is moeserve's KV type for bf16 compute.
        self.assertEqual(plan("--shape", "1.2B")["kv_bytes_per_token"], 2 * 32 * 14 * 128 * 2)

    def test_kv_capacity_in_memory_left(self):
        r = plan("--shape", "0.1B", "--mem", "8", "--reserve", "1", "--workspace", "0.5", "--ctx", "2048")
        row = next(x for x in r["rows"] if x["dtype"] == "bf16")
        left = (8 - 1 - 0.5) * 2**30 - row["weights_bytes"]
        self.assertAlmostEqual(row["kv_left_bytes"], left)
        self.assertEqual(row["kv_tokens"], int(left // r["kv_bytes_per_token"]))
        self.assertEqual(row["sequences_at_ctx"], row["kv_tokens"] // 2048)

    def test_tok_s_is_bandwidth_bound(self):
        r = plan("--shape", "0.5B", "--device", "agx-orin-64", "--eff", "0.5", "--ctx", "1024")
        for row in r["rows"]:
            self.assertAlmostEqual(row["tok_s_batch1"], 204.8e9 * 0.5 / row["bytes_per_token"])
            kv = r["kv_bytes_per_token"] * 1024
            self.assertAlmostEqual(row["bytes_per_token"], row["weight_bytes_per_token"] + kv)

    def test_activation_ratio_scales_expert_reads(self):
        lo = plan("--shape", "0.5B", "--dtype", "bf16", "--activation", "0.1")
        hi = plan("--shape", "0.5B", "--dtype", "bf16", "--activation", "0.3")
        experts = lo["params"]["routed_experts"]
        diff = hi["rows"][0]["weight_bytes_per_token"] - lo["rows"][0]["weight_bytes_per_token"]
        self.assertAlmostEqual(diff, 2 * experts * 0.2, delta=1)
        self.assertEqual(plan("--shape", "0.1B")["activation_per_layer"], [0.2] * 15)


class Formulas(unittest.TestCase):
    def setUp(self):
        self.p = load_module(PLANNER)

    def test_union_of_experts(self):
        u = self.p.union_fraction
        self.assertAlmostEqual(u(0.2, 1), 0.2)
        self.assertAlmostEqual(u(0.25, 8), 1 - 0.75**8)  # s = 4, B = 8: 90 % of the experts per step
        self.assertAlmostEqual(u(0.25, 8), 0.8999, places=3)
        self.assertLess(u(0.1, 4), u(0.1, 5))

    def test_weights_per_step(self):
        r = plan("--shape", "0.2B", "--dtype", "bf16", "--batch", "1")["rows"][0]
        self.assertAlmostEqual(r["weights_per_step_bytes"], r["weight_bytes_per_token"])
        big = plan("--shape", "0.2B", "--dtype", "bf16", "--batch", "4096")
        # A large batch touches every expert: everything but the embedding is read once.
        emb = 73448 * 1024 * 2
        self.assertAlmostEqual(big["rows"][0]["weights_per_step_bytes"],
                               big["rows"][0]["weights_bytes"] - emb + 4096 * 1024 * 2, delta=1e3)

    def test_decode_tps(self):
        self.assertAlmostEqual(self.p.decode_tps(100, 0.6, 2e9), 30.0)

    def test_ranking_principle(self):
        c = lambda name, n, e, k: {"name": name, "n_total": n, "n_exp": e, "n_topk": k}  # noqa: E731
        cands = [
            c("largest, s=16", 100.0, 64, 4),
            c("within 3%, s=8, 64 experts", 98.0, 64, 8),
            c("within 3%, s=8, 32 experts", 97.5, 32, 4),
            c("within 3%, s=8, 32 experts, larger", 97.8, 32, 4),
            c("outside 3%, s=2", 96.0, 16, 8),
            c("small", 50.0, 8, 4),
        ]
        order = [x["name"] for x in self.p.rank(cands)]
        self.assertEqual(order, ["within 3%, s=8, 32 experts, larger", "within 3%, s=8, 32 experts",
                                 "within 3%, s=8, 64 experts", "largest, s=16", "outside 3%, s=2", "small"])
        self.assertEqual(self.p.rank([]), [])

    def test_recommend_is_feasible_and_ranked(self):
        r = plan("--recommend", "--device", "agx-orin-32", "--wbits", "4.5", "--ctx", "4096", "--tps", "30",
                 "--top", "5")
        self.assertEqual(len(r["top"]), 5)
        for x in r["top"]:
            self.assertLessEqual(x["footprint_bytes"], 32 * 2**30)
            self.assertGreaterEqual(x["tok_s"], 30 - 1e-6)
            self.assertTrue(32 <= x["d"] / x["L"] <= 160)
        keys = [(x["s"], x["n_exp"], -x["n_total"]) for x in r["top"]]
        self.assertEqual(keys, sorted(keys))


class Presets(unittest.TestCase):
    def test_device_preset(self):
        d = plan("--shape", "0.1B", "--device", "agx-orin-64")["device"]
        self.assertEqual((d["mem_gib"], d["bw_gbs"]), (64, 204.8))
        self.assertEqual(plan("--shape", "0.1B", "--device", "orin64")["device"]["name"], "agx-orin-64")
        d = plan("--shape", "0.1B", "--device", "h200", "--bw", "4000")["device"]
        self.assertEqual((d["mem_gib"], d["bw_gbs"]), (141, 4000))

    def test_unknown_device(self):
        rc, _, err = run("--shape", "0.1B", "--device", "tpu-v9")
        self.assertEqual(rc, 2)
        self.assertIn("unknown device 'tpu-v9'", err)
        self.assertIn("agx-orin-64", err)

    def test_missing_config(self):
        with tempfile.TemporaryDirectory() as d:
            rc, _, err = run("--model", d)
        self.assertEqual(rc, 2)
        self.assertIn("config.json: not found", err)

    def test_no_mode(self):
        self.assertEqual(run()[0], 2)


class RealCheckpoints(unittest.TestCase):
    """The config-derived tensor set equals the safetensors header of generated checkpoints."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        gen = os.path.join(os.path.dirname(PLANNER), "gen_tiny_model.py")
        for v in ("deco", "topk", "softmoe"):
            subprocess.run([sys.executable, gen, "--out", os.path.join(cls.tmp.name, v), "--variant", v,
                            "--size", "tiny", "--seed", "3"], check=True, capture_output=True, timeout=300)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_config_matches_header(self):
        for v in ("deco", "topk", "softmoe"):
            d = os.path.join(self.tmp.name, v)
            exact, derived = plan("--model", d), plan("--model", d, "--no-weights")
            self.assertIn("exact", exact["source"])
            for k in ("non_embedding", "routed_experts"):
                self.assertEqual(exact["params"][k], derived["params"][k], f"{v} {k}")
        # SoftMoE's vocab_size is authoritative (§7.2.1), so even the totals agree.
        d = os.path.join(self.tmp.name, "softmoe")
        self.assertEqual(plan("--model", d)["params"]["total"], plan("--model", d, "--no-weights")["params"]["total"])

    def test_topk_ratio(self):
        with open(os.path.join(self.tmp.name, "topk", "config.json")) as f:
            c = json.load(f)
        r = plan("--model", os.path.join(self.tmp.name, "topk"))
        for x in r["activation_per_layer"]:
            self.assertAlmostEqual(x, c["moe_router_topk"] / c["num_experts"])

    def test_softmoe_infer_ae(self):
        d = os.path.join(self.tmp.name, "softmoe")
        r = plan("--model", d)
        n = r["shape"]["E"]
        for k, a, cap in zip(r["k_l"], r["activation_per_layer"], r["cap_l"]):
            self.assertAlmostEqual(a, 1.15 * k / n)
            self.assertEqual(cap, min(math.ceil(2.0 * k), n))
        r = plan("--model", d, "--infer-ae", "2")
        self.assertEqual(r["activation_per_layer"], [2 / n] * len(r["k_l"]))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--planner", default=PLANNER)
    a, rest = ap.parse_known_args()
    PLANNER = os.path.abspath(a.planner)
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=1)
