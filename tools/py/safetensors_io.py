"""Minimal safetensors reader/writer (F32, F16, BF16) with strict validation.

Format: 8-byte little-endian u64 header length N, N bytes of JSON
  {name: {"dtype", "shape", "data_offsets": [begin, end)}, "__metadata__": {str: str}}
padded with spaces to a multiple of 8, then the data section. We require the tensors
to tile the data section exactly (no gaps, no overlaps), which is what every writer
produces and what moeserve's loader enforces.

bf16 is handled as raw uint16 bit patterns so no framework is needed.
"""
import json
import os
import struct

import numpy as np

# dtype name -> (numpy storage dtype, bytes per element)
DTYPES = {
    "F32": (np.dtype("<f4"), 4),
    "F16": (np.dtype("<f2"), 2),
    "BF16": (np.dtype("<u2"), 2),
}
INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"


class SafetensorsError(Exception):
    pass


def fp32_to_bf16_bits(a):
    """float32 array -> uint16 bf16 bit patterns, round-to-nearest-even; NaN stays NaN."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    u = a.view(np.uint32)
    # uint32 wrap-around only happens for NaN bit patterns, which are fixed up below
    rounded = ((u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1)))
               >> np.uint32(16)).astype(np.uint16)
    nan = np.isnan(a)
    if nan.any():  # keep sign, force a quiet-NaN mantissa bit so rounding can't make it Inf
        rounded[nan] = ((u[nan] >> 16) | 0x0040).astype(np.uint16)
    return rounded


def bf16_bits_to_fp32(b):
    return (np.asarray(b, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def encode(arr, dtype):
    """Array (any float dtype) -> little-endian bytes in the given safetensors dtype."""
    if dtype == "BF16":
        if np.asarray(arr).dtype == np.uint16:  # already bit patterns
            return np.ascontiguousarray(arr, dtype="<u2").tobytes()
        return fp32_to_bf16_bits(arr).astype("<u2").tobytes()
    if dtype not in DTYPES:
        raise SafetensorsError(f"unsupported dtype {dtype}")
    return np.ascontiguousarray(arr, dtype=DTYPES[dtype][0]).tobytes()


def decode(buf, dtype, shape):
    """Bytes -> float32 numpy array of `shape` (exact upcast for all supported dtypes)."""
    np_dtype, _ = DTYPES[dtype]
    raw = np.frombuffer(buf, dtype=np_dtype)
    out = bf16_bits_to_fp32(raw) if dtype == "BF16" else raw.astype(np.float32)
    return out.reshape(shape)


def nbytes(dtype, shape):
    n = DTYPES[dtype][1]
    for s in shape:
        n *= int(s)
    return n


# ---------------------------------------------------------------- writing

def build_header(specs, metadata=None):
    """specs: list of (name, dtype, shape) in data order -> (header bytes, data size)."""
    header, off = {}, 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name, dtype, shape in specs:
        if dtype not in DTYPES:
            raise SafetensorsError(f"tensor '{name}': unsupported dtype {dtype}")
        size = nbytes(dtype, shape)
        header[name] = {"dtype": dtype, "shape": [int(s) for s in shape],
                        "data_offsets": [off, off + size]}
        off += size
    return pack_header(header), off


def pack_header(header):
    """JSON header dict -> 8-byte length prefix + JSON padded with spaces to 8 bytes."""
    js = json.dumps(header, separators=(",", ":")).encode("utf-8")
    js += b" " * ((-len(js)) % 8)
    return struct.pack("<Q", len(js)) + js


class StreamWriter:
    """Writes one safetensors file tensor by tensor, in the order given up front,
    so a large checkpoint never has to be held in memory."""

    def __init__(self, path, specs, metadata=None):
        self.path = path
        self.specs = list(specs)
        self.pos = 0
        hdr, self.data_size = build_header(self.specs, metadata)
        self.f = open(path, "wb")
        self.f.write(hdr)

    def write(self, name, arr):
        if self.pos >= len(self.specs):
            raise SafetensorsError(f"{self.path}: unexpected tensor '{name}'")
        exp_name, dtype, shape = self.specs[self.pos]
        if name != exp_name or tuple(np.shape(arr)) != tuple(shape):
            raise SafetensorsError(f"{self.path}: expected {exp_name}{list(shape)}, "
                                   f"got {name}{list(np.shape(arr))}")
        self.f.write(encode(arr, dtype))
        self.pos += 1

    def close(self):
        self.f.close()
        if self.pos != len(self.specs):
            raise SafetensorsError(f"{self.path}: only {self.pos}/{len(self.specs)} tensors "
                                   "written")


def save_file(tensors, path, dtype="F32", metadata=None):
    """tensors: dict name -> array (float or, for BF16, uint16 bit patterns)."""
    specs = [(k, dtype, np.shape(v)) for k, v in tensors.items()]
    w = StreamWriter(path, specs, metadata)
    for k, v in tensors.items():
        w.write(k, v)
    w.close()


def shard_names(k):
    if k <= 1:
        return [SINGLE_NAME]
    return [f"model-{i + 1:05d}-of-{k:05d}.safetensors" for i in range(k)]


def plan_shards(specs, k):
    """Split specs (in order) into k contiguous, roughly byte-balanced, non-empty groups."""
    k = max(1, min(k, len(specs)))
    sizes = [nbytes(d, s) for _, d, s in specs]
    total, groups, cur, acc = sum(sizes), [], [], 0
    for i, (spec, size) in enumerate(zip(specs, sizes)):
        cur.append(spec)
        acc += size
        remaining_specs = len(specs) - i - 1
        remaining_groups = k - len(groups) - 1
        if remaining_groups > 0 and (acc >= total * (len(groups) + 1) / k
                                     or remaining_specs == remaining_groups):
            groups.append(cur)
            cur = []
    groups.append(cur)
    return groups


def write_model(out_dir, specs, produce, shards=1, metadata=None):
    """Write specs to model.safetensors (or k shards + index). produce(name) -> array."""
    groups = plan_shards(specs, shards)
    names = shard_names(len(groups))
    weight_map, total = {}, 0
    for fname, group in zip(names, groups):
        w = StreamWriter(os.path.join(out_dir, fname), group, metadata)
        for name, dtype, shape in group:
            w.write(name, produce(name))
            weight_map[name] = fname
            total += nbytes(dtype, shape)
        w.close()
    if len(groups) > 1:
        with open(os.path.join(out_dir, INDEX_NAME), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    return names


# ---------------------------------------------------------------- reading

def read_header(path):
    """Validate the layout and return (entries, data_start, metadata).
    entries: dict name -> (dtype, shape, begin, end), data offsets relative to data_start."""
    fname = os.path.basename(path)
    try:
        size = os.path.getsize(path)
    except OSError as e:
        raise SafetensorsError(f"{fname}: cannot open: {e.strerror}")
    if size < 8:
        raise SafetensorsError(f"{fname}: file is {size} bytes, too short for a safetensors header")
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > size - 8:
            raise SafetensorsError(f"{fname}: header length {n} exceeds file size {size}")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SafetensorsError(f"{fname}: header is not valid JSON: {e}")
    if not isinstance(header, dict):
        raise SafetensorsError(f"{fname}: header is not a JSON object")
    metadata = header.pop("__metadata__", None)
    data_len = size - 8 - n
    entries = {}
    for name, info in header.items():
        where = f"{fname}: tensor '{name}'"
        if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= info.keys():
            raise SafetensorsError(f"{where}: entry needs dtype, shape and data_offsets")
        dtype, shape, offs = info["dtype"], info["shape"], info["data_offsets"]
        if dtype not in DTYPES:
            raise SafetensorsError(f"{where}: unsupported dtype '{dtype}' (need F32, F16 or BF16)")
        if not (isinstance(shape, list) and all(isinstance(s, int) and s >= 0 for s in shape)):
            raise SafetensorsError(f"{where}: bad shape {shape}")
        if not (isinstance(offs, list) and len(offs) == 2
                and all(isinstance(o, int) for o in offs)):
            raise SafetensorsError(f"{where}: bad data_offsets {offs}")
        b, e = offs
        if b < 0 or e < b:
            raise SafetensorsError(f"{where}: data_offsets [{b}, {e}) end before begin")
        if e > data_len:
            raise SafetensorsError(f"{where}: data_offsets [{b}, {e}) beyond the data section "
                                   f"({data_len} bytes; file truncated?)")
        if e - b != nbytes(dtype, shape):
            raise SafetensorsError(f"{where}: data_offsets span {e - b} bytes but {dtype}{shape} "
                                   f"needs {nbytes(dtype, shape)}")
        entries[name] = (dtype, tuple(shape), b, e)
    # The tensors must tile [0, data_len) exactly.
    pos, prev = 0, None
    for name, (_, _, b, e) in sorted(entries.items(), key=lambda kv: (kv[1][2], kv[1][3])):
        if b < pos:
            raise SafetensorsError(f"{fname}: tensor '{name}' overlaps tensor '{prev}'")
        if b > pos:
            raise SafetensorsError(f"{fname}: gap of {b - pos} bytes before tensor '{name}'")
        pos, prev = e, name
    if pos != data_len:
        raise SafetensorsError(f"{fname}: {data_len - pos} trailing bytes after the last tensor")
    return entries, 8 + n, metadata


def load_file(path, names=None):
    """Read tensors (all, or `names`) as float32 numpy arrays."""
    entries, start, _ = read_header(path)
    out = {}
    with open(path, "rb") as f:
        for name, (dtype, shape, b, e) in entries.items():
            if names is not None and name not in names:
                continue
            f.seek(start + b)
            out[name] = decode(f.read(e - b), dtype, shape)
    return out


def model_files(model_dir):
    """-> dict file name -> list of tensor names expected in it (from the index if sharded)."""
    index = os.path.join(model_dir, INDEX_NAME)
    if not os.path.exists(index):
        return {SINGLE_NAME: None}
    try:
        with open(index) as f:
            wm = json.load(f)["weight_map"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SafetensorsError(f"{INDEX_NAME}: cannot read weight_map: {e}")
    files = {}
    for name, fname in wm.items():
        files.setdefault(fname, []).append(name)
    return files


def read_model_headers(model_dir):
    """Validate every file of a checkpoint; -> dict name -> (file, dtype, shape)."""
    out = {}
    for fname, expected in model_files(model_dir).items():
        path = os.path.join(model_dir, fname)
        if not os.path.exists(path):
            raise SafetensorsError(f"{fname}: file not found in {model_dir}")
        entries, _, _ = read_header(path)
        if expected is not None:
            for name in expected:
                if name not in entries:
                    raise SafetensorsError(f"{INDEX_NAME}: tensor '{name}' is mapped to {fname} "
                                           f"but that file does not contain it")
            for name in entries:
                if name not in expected:
                    raise SafetensorsError(f"{fname}: tensor '{name}' is not in {INDEX_NAME} "
                                           f"weight_map for this file")
        for name, (dtype, shape, _, _) in entries.items():
            if name in out:
                raise SafetensorsError(f"{fname}: tensor '{name}' also in {out[name][0]}")
            out[name] = (fname, dtype, shape)
    return out


def load_model(model_dir):
    """All tensors of a (possibly sharded) checkpoint as float32 arrays."""
    read_model_headers(model_dir)
    out = {}
    for fname in model_files(model_dir):
        out.update(load_file(os.path.join(model_dir, fname)))
    return out
