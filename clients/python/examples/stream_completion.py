#!/usr/bin/python3
"""Streams a completion from moeserve to the terminal.

    /usr/bin/python3 clients/python/examples/stream_completion.py --target localhost:50051 --prompt "Experts are"

The text goes to stdout as it arrives; the finish reason, token counts and mean active experts
per MoE layer go to stderr at the end. Exit status 1 on an RPC error.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from moeserve_client import Client, MoeserveError  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="localhost:50051", help="HOST:PORT of moeserve")
    ap.add_argument("--prompt", required=True)
    ap.add_argument("--max_new_tokens", "--max-new-tokens", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--timeout_s", type=float, default=120.0)
    a = ap.parse_args()
    with Client(a.target, timeout=a.timeout_s) as client:
        last = None
        try:
            for chunk in client.generate(a.prompt, max_new_tokens=a.max_new_tokens, temperature=a.temperature,
                                         seed=a.seed):
                sys.stdout.write(chunk.text)
                sys.stdout.flush()
                last = chunk
        except MoeserveError as e:
            print(f"\nerror: {e}", file=sys.stderr)
            return 1
        print()
    experts = " ".join(f"{s.layer}:{s.mean_active_experts:.2f}" for s in last.moe_stats or [])
    print(f"finish_reason: {last.finish_reason}  prompt_tokens: {last.prompt_tokens}  "
          f"completion_tokens: {last.completion_tokens}\nmean active experts per MoE layer: {experts}", file=sys.stderr)
    return 1 if last.finish_reason == "ERROR" else 0


if __name__ == "__main__":
    sys.exit(main())
