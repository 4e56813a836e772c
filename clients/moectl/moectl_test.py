"""moectl against a live moeserve: health, info, generate, complete, tokenize, errors, bench."""
import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests"))
from live_server import LiveServer  # noqa: E402


def run(moectl, target, *args, expect=0):
    p = subprocess.run([moectl, *args, f"--target={target}", "--timeout_s=60"], capture_output=True, text=True,
                       timeout=120)
    if p.returncode != expect:
        raise AssertionError(f"moectl {' '.join(args)}: exit {p.returncode} (want {expect})\n"
                             f"stdout: {p.stdout}\nstderr: {p.stderr}")
    return p


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--moeserve", required=True)
    ap.add_argument("--moectl", required=True)
    ap.add_argument("--model", required=True)
    a = ap.parse_args()
    with LiveServer(a.moeserve, a.model) as server:
        t = server.target
        assert run(a.moectl, t, "health").stdout.strip() == "SERVING"
        info = json.loads(run(a.moectl, t, "info", "--json").stdout)
        assert int(info["numExperts"]) > 0 and info["hasTokenizer"], info
        gen = run(a.moectl, t, "generate", "--prompt=Experts are", "--max_new_tokens=12", "--ignore_eos")
        assert gen.stdout.strip(), "no text streamed"
        assert "finish: LENGTH" in gen.stderr and "completion 12" in gen.stderr, gen.stderr
        chunks = [json.loads(line) for line in run(a.moectl, t, "generate", "--token_ids=1,5,9", "--max_new_tokens=6",
                                                   "--ignore_eos", "--json").stdout.splitlines()]
        assert sum(len(c.get("tokenIds", [])) for c in chunks) == 6 and chunks[-1]["finishReason"] == "LENGTH"
        complete = json.loads(run(a.moectl, t, "complete", "--token_ids=1,5,9", "--max_new_tokens=6", "--ignore_eos",
                                  "--json").stdout)
        assert complete["tokenIds"] == [tid for c in chunks for tid in c.get("tokenIds", [])], "complete != generate"
        tok = run(a.moectl, t, "tokenize", "--prompt=hello world").stdout.splitlines()
        assert tok[0].startswith("1\t"), tok  # BOS first
        bad = run(a.moectl, t, "generate", "--prompt=x", "--top_p=2", expect=1)
        assert "INVALID_ARGUMENT" in bad.stderr and "sampling.top_p" in bad.stderr, bad.stderr
        usage = run(a.moectl, t, "generate", expect=2)
        assert "exactly one of" in usage.stderr
        bench = json.loads(run(a.moectl, t, "bench", "--concurrency=4", "--num_requests=8", "--input_len=8",
                               "--output_len=8").stdout)
        assert bench["completed"] == 8 and bench["failed"] == 0, bench
        assert bench["output_tokens"] == 64 and bench["ttft_s"]["p50"] > 0 and bench["itl_s"]["p99"] >= 0, bench
    print("moectl_test: PASS")


if __name__ == "__main__":
    main()
