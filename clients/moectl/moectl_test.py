"""moectl against a live moeserve, one case per CTest test (see tests/live_server.py).

    moectl_test.py --moeserve BIN --config YAML --model DIR --moectl BIN --case NAME
No timing assertions: every call has a generous deadline and only results are checked.
"""
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests"))
from live_server import run_case  # noqa: E402


def moectl(args, target, *argv, expect=0, target_flag=True):
    cmd = [args.moectl, *argv] + ([f"--target={target}", "--timeout_s=90"] if target_flag else [])
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=150)
    if p.returncode != expect:
        raise AssertionError(f"{' '.join(cmd)}: exit {p.returncode}, want {expect}\n"
                             f"stdout: {p.stdout}\nstderr: {p.stderr}")
    return p


def case_health(server, args):
    t = server.target
    assert moectl(args, t, "health").stdout.strip() == "SERVING"
    assert moectl(args, t, "health", "--service=moeserve.v1.Inference").stdout.strip() == "SERVING"
    assert json.loads(moectl(args, t, "health", "--json").stdout) == {"status": "SERVING"}
    unknown = moectl(args, t, "health", "--service=no.such.Service", expect=1)
    assert unknown.stderr.startswith("error: NOT_FOUND: "), unknown.stderr


def case_info(server, args):
    info = json.loads(moectl(args, server.target, "info", "--json").stdout)
    assert info["num_experts"] > 0, info
    assert info["num_moe_layers"] > 0 and info["vocab_size"] > 1 and info["has_tokenizer"] is True, info
    assert info["model_path"] == os.path.abspath(args.model), info
    text = moectl(args, server.target, "info").stdout
    assert "num_experts: " in text, text


def case_generate(server, args):
    t = server.target
    gen = moectl(args, t, "generate", "--prompt=Experts are", "--max_new_tokens=12", "--ignore_eos")
    assert gen.stdout.strip(), "no text on stdout"
    lines = gen.stderr.splitlines()
    assert lines[0].startswith("finish_reason: LENGTH ") and "completion_tokens: 12 " in lines[0], gen.stderr
    assert lines[1].startswith("mean active experts per MoE layer: "), gen.stderr

    # --json: one object per chunk; the tokens add up; the last chunk finishes and has the stats.
    out = moectl(args, t, "generate", "--token_ids=1,5,9", "--max_new_tokens=6", "--ignore_eos", "--json").stdout
    chunks = [json.loads(line) for line in out.splitlines()]
    streamed = [i for c in chunks for i in c["token_ids"]]
    assert len(streamed) == 6 == chunks[-1]["completion_tokens"], chunks
    assert chunks[-1]["finish_reason"] == "LENGTH" and chunks[-1]["moe_stats"]["layers"], chunks[-1]
    assert all(c["finish_reason"] == "FINISH_REASON_UNSPECIFIED" for c in chunks[:-1]), chunks

    # complete (greedy) is the stream concatenated.
    done = json.loads(moectl(args, t, "complete", "--token_ids=1,5,9", "--max_new_tokens=6", "--ignore_eos",
                             "--json").stdout)
    assert done["token_ids"] == streamed and done["text"] == "".join(c["text"] for c in chunks), (done, chunks)
    plain = moectl(args, t, "complete", "--token_ids=1,5,9", "--max_new_tokens=6", "--ignore_eos")
    assert plain.stdout == done["text"] + "\n" and "finish_reason: LENGTH" in plain.stderr, plain

    # Stop strings: repeatable flag; the stream ends before the first match of the generated text.
    full = json.loads(moectl(args, t, "complete", "--prompt=Experts are", "--max_new_tokens=24", "--ignore_eos",
                             "--json").stdout)["text"]
    if len(full) >= 6:
        stop = full[3:6]
        stopped = json.loads(moectl(args, t, "complete", "--prompt=Experts are", "--max_new_tokens=24",
                                    "--ignore_eos", "--json", "--stop=zzzq", f"--stop={stop}").stdout)
        assert stopped["finish_reason"] == "STOP_SEQUENCE", stopped
        assert stopped["text"] == full[:full.index(stop)], (stopped["text"], full, stop)


def case_tokenize(server, args):
    rows = [line.split("\t") for line in moectl(args, server.target, "tokenize", "--prompt=hello world").stdout
            .splitlines()]
    assert rows[0][0] == "1" and len(rows) > 2, rows  # BOS first
    j = json.loads(moectl(args, server.target, "tokenize", "--prompt=hello world", "--json", "--noadd_bos").stdout)
    assert j["token_ids"] == [int(r[0]) for r in rows[1:]] and len(j["pieces"]) == len(j["token_ids"]), (j, rows)


def case_invalid_request(server, args):
    t = server.target
    bad = moectl(args, t, "generate", "--prompt=x", "--top_p=2", expect=1)
    assert bad.stderr.startswith("error: INVALID_ARGUMENT: ") and "top_p" in bad.stderr, bad.stderr
    bad = moectl(args, t, "complete", "--token_ids=1,999999", expect=1)
    assert bad.stderr.startswith("error: INVALID_ARGUMENT: "), bad.stderr
    # Usage errors exit 2 without calling the server.
    for argv, message in [(["generate"], "exactly one of --prompt and --token_ids"),
                          (["generate", "--prompt=x", "--no_such_flag"], "unknown flag --no_such_flag"),
                          (["generate", "--prompt=x", "--max_new_tokens=many"], "--max_new_tokens"),
                          (["frobnicate"], "unknown command"),
                          (["info", "--ca_cert=/nonexistent.pem"], "need --tls"),
                          (["bench", "--input_len=100000"], "max_context")]:
        p = moectl(args, t, *argv, expect=2)
        assert p.stderr.startswith("error: ") and message in p.stderr, (argv, p.stderr)
    assert "usage: moectl" in moectl(args, t, "--help", target_flag=False).stdout
    # An unreachable server is an RPC error.
    down = moectl(args, "127.0.0.1:1", "health", expect=1)
    assert down.stderr.startswith("error: UNAVAILABLE: "), down.stderr


def check_bench(result, n, output_len):
    for key in ["duration_s", "completed", "failed", "output_tokens_per_s", "requests_per_s", "num_requests",
                "concurrency", "request_rate", "input_len", "output_len", "len_jitter", "seed"]:
        assert key in result, (key, result)
    assert result["completed"] == n and result["failed"] == 0 and result["errors"] == {}, result
    assert result["output_tokens_per_s"] > 0 and result["requests_per_s"] > 0 and result["duration_s"] > 0, result
    for metric in ["ttft_s", "itl_s", "tpot_s", "e2e_s"]:
        d = result[metric]
        assert all(d[k] is not None and d[k] >= 0 for k in ["mean", "p50", "p90", "p99"]), (metric, d)
        assert d["p50"] <= d["p90"] <= d["p99"] <= d["max"], (metric, d)
    assert result["ttft_s"]["count"] == n and result["e2e_s"]["count"] == n, result
    assert result["itl_s"]["count"] == result["output_tokens"] - n, result  # n_out - 1 per request
    if output_len is not None:
        assert result["output_tokens"] == n * output_len, result  # ignore_eos: exact lengths


def case_bench(server, args):
    t = server.target
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "bench.json")
        p = moectl(args, t, "bench", "--concurrency=4", "--num_requests=8", "--input_len=8", "--output_len=8",
                   "--json", f"--out={out}")
        result = json.loads(p.stdout)
        with open(out) as f:
            assert json.load(f) == result
    check_bench(result, 8, 8)
    assert result["mode"] == "concurrency" and result["concurrency"] == 4 and result["request_rate"] is None
    # Poisson arrivals with jittered lengths (seeded), capped at 2 in flight; human-readable output.
    rate = json.loads(moectl(args, t, "bench", "--request_rate=50", "--concurrency=2", "--num_requests=6",
                             "--input_len=10", "--output_len=6", "--len_jitter=0.5", "--seed=7", "--json").stdout)
    check_bench(rate, 6, None)
    assert rate["mode"] == "request_rate" and rate["request_rate"] == 50 and rate["concurrency"] == 2, rate
    assert 6 * 3 <= rate["output_tokens"] <= 6 * 9, rate
    human = moectl(args, t, "bench", "--num_requests=2", "--input_len=4", "--output_len=3").stdout
    assert "2 completed, 0 failed" in human and "ttft" in human, human


CASES = {name[len("case_"):]: fn for name, fn in globals().items() if name.startswith("case_")}

if __name__ == "__main__":
    run_case(CASES, lambda ap: ap.add_argument("--moectl", required=True, help="the moectl binary"))
