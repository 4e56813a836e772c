#!/usr/bin/python3
"""Streams a completion from moeserve to the terminal.

    /usr/bin/python3 clients/python/examples/stream_completion.py --target localhost:50051 --prompt "Experts are"
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from moeserve_client import Client  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="localhost:50051")
    ap.add_argument("--prompt", required=True)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=0.0)
    a = ap.parse_args()
    with Client(a.target, timeout=120) as client:
        last = None
        for chunk in client.generate(a.prompt, max_new_tokens=a.max_new_tokens, temperature=a.temperature):
            print(chunk.text, end="", flush=True)
            last = chunk
        print()
        active = " ".join(f"{s.layer}:{s.mean_active_experts:.2f}" for s in last.moe_stats)
        print(f"[{last.finish_reason}: {last.completion_tokens} tokens; mean active experts per MoE layer {active}]",
              file=sys.stderr)


if __name__ == "__main__":
    main()
