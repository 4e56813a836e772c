"""The Python client against a live moeserve, one case per CTest test.

    client_test.py --moeserve BIN --config YAML --model DIR --case NAME
The stubs come from $MOESERVE_PYTHON_STUBS (set by CTest) or <repo>/build/python.
"""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "tests"))
from live_server import run_case  # noqa: E402
from moeserve_client import Client, MoeserveError  # noqa: E402

TIMEOUT = 90


def case_generate_stream(server, args):
    with Client(server.target, timeout=TIMEOUT) as client:
        num_moe_layers = client.model_info().num_moe_layers
        for prompt in ([1, 7, 42], "Experts are"):
            chunks = list(client.generate(prompt, max_new_tokens=10, ignore_eos=True))
            last = chunks[-1]
            assert last.finish_reason == "LENGTH", last
            assert all(c.finish_reason is None and c.moe_stats is None for c in chunks[:-1]), chunks
            streamed = [t for c in chunks for t in c.token_ids]
            assert len(streamed) == last.completion_tokens == 10, (len(streamed), last)
            assert [c.completion_tokens for c in chunks] == [
                sum(len(c.token_ids) for c in chunks[:i + 1]) for i in range(len(chunks))], chunks
            assert len(last.moe_stats) == num_moe_layers, last.moe_stats
            assert all(s.num_experts > 0 and s.routed_tokens > 0 and 0 <= s.mean_active_experts <= s.num_experts
                       for s in last.moe_stats), last.moe_stats
            assert len({c.request_id for c in chunks}) == 1 and chunks[0].request_id, chunks
            if not isinstance(prompt, str):
                assert last.prompt_tokens == len(prompt), last
        # Without ignore_eos the stream may end early, but the counts still agree.
        chunks = list(client.generate("Routers pick", max_new_tokens=16, temperature=0.9, seed=5, logprobs=2))
        assert sum(len(c.token_ids) for c in chunks) == chunks[-1].completion_tokens <= 16, chunks
        assert all(len(c.logprobs) == len(c.token_ids) for c in chunks), chunks
        assert all(len(l.top) == 2 for c in chunks for l in c.logprobs), chunks
        # Seeded sampling repeats.
        again = list(client.generate("Routers pick", max_new_tokens=16, temperature=0.9, seed=5, logprobs=2))
        assert [t for c in again for t in c.token_ids] == [t for c in chunks for t in c.token_ids]


def case_complete_matches_generate(server, args):
    with Client(server.target, timeout=TIMEOUT) as client:
        for prompt in ("Experts are", [1, 5, 9, 200]):
            chunks = list(client.generate(prompt, max_new_tokens=12))  # greedy
            done = client.complete(prompt, max_new_tokens=12)
            assert done.token_ids == [t for c in chunks for t in c.token_ids], (done, chunks)
            assert done.text == "".join(c.text for c in chunks), (done, chunks)
            assert done.finish_reason == chunks[-1].finish_reason and done.moe_stats, done
            assert done.completion_tokens == chunks[-1].completion_tokens, (done, chunks[-1])
            assert done.prompt_tokens == chunks[-1].prompt_tokens, (done, chunks[-1])


def case_tokenize(server, args):
    with Client(server.target, timeout=TIMEOUT) as client:
        ids = client.tokenize("hello world")
        assert ids[0] == 1 and len(ids) > 2, ids  # BOS first
        plain, pieces = client.tokenize_pieces("hello world", add_bos=False)
        assert plain == ids[1:] and len(pieces) == len(plain) and all(pieces), (plain, pieces)
        # A text prompt is tokenized the same way by Generate.
        first = next(iter(client.generate("hello world", max_new_tokens=1)))
        assert first.prompt_tokens == len(ids), (first, ids)


def case_health(server, args):
    with Client(server.target) as client:
        assert client.health() == "SERVING"
        assert client.health("moeserve.v1.Inference") == "SERVING"
        try:
            client.health("no.such.Service")
            raise AssertionError("health of an unknown service did not fail")
        except MoeserveError as e:
            assert e.code_name == "NOT_FOUND", e
    with Client("127.0.0.1:1", timeout=10) as down:
        try:
            down.health()
            raise AssertionError("health of a closed port did not fail")
        except MoeserveError as e:
            assert e.code_name == "UNAVAILABLE", e


def case_errors(server, args):
    with Client(server.target, timeout=TIMEOUT) as client:
        for call in (lambda: list(client.generate("x", top_p=2.0)), lambda: client.complete("x", top_p=2.0),
                     lambda: client.complete([1, 10 ** 7])):
            try:
                call()
                raise AssertionError("an invalid request did not fail")
            except MoeserveError as e:
                assert e.code_name == "INVALID_ARGUMENT" and e.message, e
        # Cancelling a stream ends the iteration quietly; the client stays usable.
        stream = client.generate("Experts are", max_new_tokens=200, ignore_eos=True)
        first = next(stream)
        stream.cancel()
        rest = list(stream)
        assert len(first.token_ids) + sum(len(c.token_ids) for c in rest) < 200, rest
        assert client.complete("Experts are", max_new_tokens=2, ignore_eos=True).completion_tokens == 2


def case_example(server, args):
    script = os.path.join(HERE, "examples", "stream_completion.py")
    p = subprocess.run([sys.executable, script, "--target", server.target, "--prompt", "Experts are",
                        "--max_new_tokens", "8"], capture_output=True, text=True, timeout=150)
    assert p.returncode == 0, p
    assert p.stdout.strip(), p
    assert "finish_reason: " in p.stderr and "mean active experts per MoE layer:" in p.stderr, p.stderr
    with Client(server.target, timeout=TIMEOUT) as client:
        assert p.stdout == client.complete("Experts are", max_new_tokens=8).text + "\n", p.stdout
    bad = subprocess.run([sys.executable, script, "--target", server.target, "--prompt", "x", "--temperature", "-1"],
                         capture_output=True, text=True, timeout=150)
    assert bad.returncode == 1 and "error: INVALID_ARGUMENT: " in bad.stderr, bad


CASES = {name[len("case_"):]: fn for name, fn in globals().items() if name.startswith("case_")}

if __name__ == "__main__":
    run_case(CASES)
