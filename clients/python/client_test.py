"""The Python client against a live moeserve."""
import argparse
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests"))
from live_server import LiveServer  # noqa: E402
from moeserve_client import Client  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--moeserve", required=True)
    ap.add_argument("--model", required=True)
    a = ap.parse_args()
    with LiveServer(a.moeserve, a.model) as server, Client(server.target, timeout=60) as client:
        assert client.health() == "SERVING"
        info = client.model_info()
        assert info.num_experts > 0 and info.has_tokenizer
        chunks = list(client.generate([1, 7, 42], max_new_tokens=10, ignore_eos=True))
        assert chunks[-1].finish_reason == "LENGTH", chunks[-1]
        assert all(c.finish_reason is None for c in chunks[:-1])
        streamed = [t for c in chunks for t in c.token_ids]
        assert len(streamed) == chunks[-1].completion_tokens == 10
        assert chunks[-1].moe_stats and all(s.routed_tokens == 3 + 10 - 1 for s in chunks[-1].moe_stats)
        complete = client.complete([1, 7, 42], max_new_tokens=10, ignore_eos=True)
        assert complete.token_ids == streamed, "complete != concatenated stream (greedy)"
        assert complete.text == "".join(c.text for c in chunks)
        ids = client.tokenize("hello world")
        assert ids[0] == 1 and len(ids) > 2
        text = "".join(c.text for c in client.generate("Experts are", max_new_tokens=8, ignore_eos=True))
        assert text
        example = subprocess.run([sys.executable, os.path.join(HERE, "examples", "stream_completion.py"),
                                  "--target", server.target, "--prompt", "Routers pick", "--max-new-tokens", "8"],
                                 capture_output=True, text=True, timeout=120)
        assert example.returncode == 0 and ("LENGTH" in example.stderr or "STOP_TOKEN" in example.stderr), example
    print("client_test: PASS")


if __name__ == "__main__":
    main()
