#!/usr/bin/python3
"""A CUDA-enabled moeserve on a machine without a GPU serves gRPC and /metrics, and both name the
backend actually in use (regression test for the cuBLAS/civetweb conflict, docs/CUDA.md).

The old failure: with libcublasLt loaded (94 KiB of static TLS), the metrics server's threads,
created with civetweb's fixed 100 KiB stacks, could not start, so /metrics was dead while gRPC
served. This test runs the binary as built (which links cuBLAS when the build has CUDA) and,
wherever the toolkit's libcublasLt exists, also with it preloaded into any build.
"""
import argparse
import glob
import os
import re
import socket
import subprocess
import sys
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from live_server import LiveServer  # noqa: E402


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_serving(binary, model, stubs, env_extra, label):
    import grpc
    from moeserve.v1 import inference_pb2 as pb, inference_pb2_grpc as pb_grpc
    port = free_port()
    old = {k: os.environ.get(k) for k in env_extra}
    os.environ.update(env_extra)
    try:
        with LiveServer(binary, model, metrics_listen=f"127.0.0.1:{port}") as server:
            stub = pb_grpc.InferenceStub(grpc.insecure_channel(server.target))
            info = stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=30)
            reply = stub.Complete(pb.GenerateRequest(token_ids=pb.TokenIds(ids=[1, 5, 9]), max_new_tokens=4,
                                                     ignore_eos=True), timeout=60)
            assert len(reply.token_ids) == 4, f"{label}: Complete returned {len(reply.token_ids)} tokens"
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
            m = re.search(r'moeserve_model_info\{[^}]*backend="(\w+)"', text)
            assert m, f"{label}: /metrics has no moeserve_model_info:\n{text[:500]}"
            assert m.group(1) == info.backend, f"{label}: /metrics says {m.group(1)}, GetModelInfo {info.backend}"
            assert "moeserve_generation_tokens_total 4" in text, f"{label}: generated tokens not counted"
            log = server.output()
            assert "moeserve: backend " in log, f"{label}: the auto choice was not logged:\n{log}"
            print(f"{label}: gRPC and /metrics serve, backend {info.backend}")
            return info.backend
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--moeserve", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--stubs", required=True)
    ap.add_argument("--cuda-built", required=True, choices=["ON", "OFF"])
    a = ap.parse_args()
    sys.path.insert(0, a.stubs)

    linked = subprocess.run(["ldd", a.moeserve], capture_output=True, text=True, check=True).stdout
    if a.cuda_built == "ON":
        assert "libcublasLt" in linked, "a CUDA build must link cuBLAS (else this test proves nothing)"
    check_serving(a.moeserve, a.model, a.stubs, {}, "as built")

    preloads = sorted(glob.glob("/usr/local/cuda/lib64/libcublasLt.so.*") +
                      glob.glob("/usr/local/cuda/targets/*/lib/libcublasLt.so.*"))
    if preloads:
        check_serving(a.moeserve, a.model, a.stubs, {"LD_PRELOAD": preloads[0]}, f"LD_PRELOAD={preloads[0]}")
    elif a.cuda_built == "ON":
        raise AssertionError("CUDA build but no libcublasLt under /usr/local/cuda to preload")
    else:
        print("no CUDA toolkit here: the preload case does not apply")


if __name__ == "__main__":
    main()
