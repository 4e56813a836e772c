#!/usr/bin/python3
"""Convert an upstream DECO export (pytorch_model.bin, a pickled dict[str, Tensor]) to
model.safetensors, which is what moeserve loads (spec deco.md §1).

  convert_bin_to_safetensors.py --in DIR/pytorch_model.bin --out DIR/model.safetensors \
      [--dtype keep|f32|bf16|f16]

The .bin is read with torch.load(weights_only=True): only tensors and plain containers are
unpickled, never arbitrary objects. Exits 1 with a message on anything but a flat
dict[str, Tensor] of floating-point tensors.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "py"))
import safetensors_io as st  # noqa: E402


def fail(msg):
    print(f"convert_bin_to_safetensors: error: {msg}", file=sys.stderr)
    sys.exit(1)


def to_numpy(t, out_dtype):
    """Tensor -> array for st.encode: uint16 bit patterns for BF16, exact values otherwise."""
    import torch
    t = t.detach().contiguous()
    if out_dtype == "BF16":
        if t.dtype != torch.bfloat16:
            t = t.to(torch.float32).to(torch.bfloat16)  # torch rounds to nearest even
        return t.view(torch.int16).numpy().view(np.uint16)
    if t.dtype == torch.bfloat16:
        t = t.to(torch.float32)  # exact
    return t.numpy()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--in", dest="inp", required=True, help="pytorch_model.bin")
    ap.add_argument("--out", required=True, help="model.safetensors")
    ap.add_argument("--dtype", default="keep", choices=["keep", "f32", "bf16", "f16"])
    a = ap.parse_args(argv)

    import torch
    names = {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}
    try:
        sd = torch.load(a.inp, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        fail(f"{a.inp}: no such file")
    except Exception as e:  # UnpicklingError for objects outside the weights-only allow-list
        why = str(e)
        why = why[why.find("WeightsUnpickler error:"):] if "WeightsUnpickler error:" in why else why
        fail(f"{a.inp}: refused to load: not a plain tensor file (weights_only=True allows "
             f"only tensors and plain containers, never arbitrary Python objects): {why}")
    if not isinstance(sd, dict):
        fail(f"{a.inp}: top-level object is {type(sd).__name__}, expected a dict[str, Tensor]")
    if not sd:
        fail(f"{a.inp}: the state dict is empty")
    for k, v in sd.items():
        if not isinstance(k, str):
            fail(f"{a.inp}: key {k!r} is not a string")
        if not isinstance(v, torch.Tensor):
            hint = " (nested state dict? pass the inner dict)" if isinstance(v, dict) else ""
            fail(f"{a.inp}: value of '{k}' is {type(v).__name__}, not a Tensor{hint}")
        if v.dtype not in names:
            fail(f"{a.inp}: tensor '{k}' has unsupported dtype {v.dtype} (need float32/bf16/f16)")

    force = {"keep": None, "f32": "F32", "bf16": "BF16", "f16": "F16"}[a.dtype]
    specs = [(k, force or names[v.dtype], tuple(v.shape)) for k, v in sd.items()]
    out_dtype = {k: d for k, d, _ in specs}
    w = st.StreamWriter(a.out, specs, metadata={"format": "pt"})
    for k, v in sd.items():
        w.write(k, to_numpy(v, out_dtype[k]))
    w.close()
    print(f"convert_bin_to_safetensors: wrote {len(specs)} tensors to {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
