#!/usr/bin/python3
"""Tests tools/convert_bin_to_safetensors.py.

  converter_test.py [--workdir DIR]

1. For each dtype: the generator writes pytorch_model.bin (--bin-only), the converter turns it
   into model.safetensors, and every tensor (name, dtype, shape, bits) must equal a
   model.safetensors written directly with the same seed.
2. Files that are not a flat dict[str, Tensor] must be refused with exit 1 and a clear
   message: a pickled class instance (blocked by weights_only=True), a top-level list, a
   string value, a nested state dict.
"""
import argparse
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tools", "py"))
import safetensors_io as st  # noqa: E402

GEN = os.path.join(ROOT, "tools", "gen_tiny_model.py")
CONV = os.path.join(ROOT, "tools", "convert_bin_to_safetensors.py")
failed = []


def check(name, cond, detail=""):
    print(f"  {'ok  ' if cond else 'FAIL'} {name}{(': ' + detail) if detail else ''}")
    if not cond:
        failed.append(name)


def raw_tensors(path):
    """name -> (dtype, shape, raw bytes), to compare bit for bit."""
    entries, start, _ = st.read_header(path)
    out = {}
    with open(path, "rb") as f:
        for name, (dtype, shape, b, e) in entries.items():
            f.seek(start + b)
            out[name] = (dtype, shape, f.read(e - b))
    return out


class NotATensor:  # module-level so pickle can save it; weights_only must refuse it
    def __init__(self):
        self.payload = "arbitrary object"


def test_roundtrip(tmp):
    for dtype in ("bf16", "f32", "f16"):
        a, b = os.path.join(tmp, f"bin_{dtype}"), os.path.join(tmp, f"st_{dtype}")
        common = ["--variant", "deco", "--size", "tiny", "--seed", "11", "--dtype", dtype,
                  "--set", "moe_router_enable_expert_bias=true"]  # mixed dtypes (F32 bias)
        subprocess.run([sys.executable, GEN, "--out", a, "--bin-only", *common], check=True)
        subprocess.run([sys.executable, GEN, "--out", b, *common], check=True)
        check(f"{dtype}: --bin-only writes no safetensors",
              not os.path.exists(os.path.join(a, "model.safetensors")))
        r = subprocess.run([sys.executable, CONV, "--in", os.path.join(a, "pytorch_model.bin"),
                            "--out", os.path.join(a, "model.safetensors")],
                           capture_output=True, text=True)
        check(f"{dtype}: converter exit 0", r.returncode == 0, r.stderr.strip())
        if r.returncode:
            continue
        got, want = raw_tensors(os.path.join(a, "model.safetensors")), \
            raw_tensors(os.path.join(b, "model.safetensors"))
        diff = [k for k in want if got.get(k) != want[k]] + [k for k in got if k not in want]
        check(f"{dtype}: {len(want)} tensors identical to direct safetensors", not diff,
              f"differ: {diff[:3]}" if diff else "")
    # --dtype f32 upcasts bf16 exactly
    a = os.path.join(tmp, "bin_bf16")
    out = os.path.join(tmp, "up.safetensors")
    r = subprocess.run([sys.executable, CONV, "--in", os.path.join(a, "pytorch_model.bin"),
                        "--out", out, "--dtype", "f32"], capture_output=True, text=True)
    got, want = st.load_file(out), st.load_file(os.path.join(tmp, "st_bf16", "model.safetensors"))
    check("--dtype f32 upcasts bf16 exactly", r.returncode == 0 and all(
        (got[k] == want[k]).all() for k in want) and
        all(d == "F32" for d, _, _ in raw_tensors(out).values()))


def test_refusals(tmp):
    import torch
    cases = [
        ("pickled class instance", {"w": torch.zeros(2), "obj": NotATensor()}, "weights_only"),
        ("top-level list", [torch.zeros(2)], "expected a dict"),
        ("string value", {"w": torch.zeros(2), "note": "hello"}, "'note'"),
        ("nested state dict", {"model": {"w": torch.zeros(2)}}, "nested"),
        ("integer tensor", {"ids": torch.arange(3)}, "unsupported dtype"),
    ]
    for name, obj, needle in cases:
        path = os.path.join(tmp, "bad.bin")
        torch.save(obj, path)
        out = os.path.join(tmp, "bad.safetensors")
        r = subprocess.run([sys.executable, CONV, "--in", path, "--out", out],
                           capture_output=True, text=True)
        check(f"refuses {name} (exit 1, message names the problem)",
              r.returncode == 1 and needle.lower() in r.stderr.lower(), r.stderr.strip()[:160])
    r = subprocess.run([sys.executable, CONV, "--in", os.path.join(tmp, "nope.bin"), "--out",
                        os.path.join(tmp, "x.safetensors")], capture_output=True, text=True)
    check("missing input file: exit 1", r.returncode == 1 and "nope.bin" in r.stderr)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--workdir")
    a = ap.parse_args(argv)
    if a.workdir:
        os.makedirs(a.workdir, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=a.workdir) as tmp:
        test_roundtrip(tmp)
        test_refusals(tmp)
    print(f"converter_test: {'FAIL: ' + ', '.join(failed) if failed else 'PASS'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
