"""A small typed client of moeserve's gRPC API (package moeserve.v1) with a streaming iterator.

    from moeserve_client import Client
    with Client("localhost:50051", timeout=60) as client:
        for chunk in client.generate("Experts are", max_new_tokens=32):
            print(chunk.text, end="", flush=True)

The generated stubs (moeserve.v1.inference_pb2*) come from the build: they are imported from
$MOESERVE_PYTHON_STUBS, else from <repo>/build/python.
"""
import dataclasses
import os
import sys
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import grpc

from . import _health


def _import_stubs():
    path = os.environ.get("MOESERVE_PYTHON_STUBS") or os.path.normpath(
        os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "build", "python"))
    if path not in sys.path:
        sys.path.insert(0, path)
    try:
        from moeserve.v1 import inference_pb2, inference_pb2_grpc
    except ImportError as e:
        raise ImportError(f"moeserve_client: cannot import moeserve.v1.inference_pb2 from {path}: build the "
                          f"target moeserve_proto_python, or point $MOESERVE_PYTHON_STUBS at the stubs") from e
    return inference_pb2, inference_pb2_grpc


pb, pb_grpc = _import_stubs()

Prompt = Union[str, Sequence[int]]  # text (the server tokenizes it and prepends BOS) or token ids
_DEFAULT = object()  # "use the client's timeout"


class MoeserveError(Exception):
    """An RPC that ended with a non-OK status: code (grpc.StatusCode), code_name, message."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.code_name = code.name
        self.message = message

    @staticmethod
    def from_rpc(error: grpc.RpcError) -> "MoeserveError":
        return MoeserveError(error.code(), error.details() or "")


@dataclasses.dataclass
class TopLogprob:
    token_id: int
    logprob: float


@dataclasses.dataclass
class TokenLogprob:
    token_id: int
    logprob: float
    top: List[TopLogprob]


@dataclasses.dataclass
class LayerMoeStats:
    """Per MoE layer: mean routed experts active per token of the request."""
    layer: int
    num_experts: int
    mean_active_experts: float
    routed_tokens: int
    expert_activations: int


@dataclasses.dataclass
class Chunk:
    """One streamed response, or (from complete()) the whole completion."""
    request_id: str
    token_ids: List[int]               # the new tokens of this chunk
    text: str                          # their text (whole UTF-8 characters)
    prompt_tokens: int                 # cumulative counts
    completion_tokens: int
    finish_reason: Optional[str]       # "LENGTH", "STOP_TOKEN", ...; None before the last chunk
    error: str = ""                    # with finish_reason "ERROR"
    logprobs: List[TokenLogprob] = dataclasses.field(default_factory=list)
    moe_stats: Optional[List[LayerMoeStats]] = None  # the last chunk only

    @staticmethod
    def from_proto(r) -> "Chunk":
        finished = r.finish_reason != pb.FINISH_REASON_UNSPECIFIED
        return Chunk(
            request_id=r.request_id,
            token_ids=list(r.token_ids),
            text=r.text,
            prompt_tokens=r.prompt_tokens,
            completion_tokens=r.completion_tokens,
            finish_reason=pb.FinishReason.Name(r.finish_reason) if finished else None,
            error=r.error,
            logprobs=[TokenLogprob(l.token_id, l.logprob, [TopLogprob(t.token_id, t.logprob) for t in l.top])
                      for l in r.logprobs],
            moe_stats=[LayerMoeStats(s.layer, s.num_experts, s.mean_active_experts, s.routed_tokens,
                                     s.expert_activations) for s in r.moe_stats.layers] if finished else None)


class GenerateStream:
    """Iterator over a Generate call's chunks. Raises MoeserveError if the call fails.
    cancel() (or leaving a `with` block) ends the call early; iteration then just stops."""

    def __init__(self, call):
        self._call = call
        self._cancelled = False

    def __iter__(self):
        return self

    def __next__(self) -> Chunk:
        try:
            return Chunk.from_proto(next(self._call))
        except grpc.RpcError as e:
            if self._cancelled and e.code() == grpc.StatusCode.CANCELLED:
                raise StopIteration from None
            raise MoeserveError.from_rpc(e) from None

    def cancel(self):
        self._cancelled = True
        self._call.cancel()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cancel()
        return False


def _read(path: Optional[str]) -> Optional[bytes]:
    if path is None:
        return None
    with open(path, "rb") as f:
        return f.read()


class Client:
    """One channel to a moeserve target: host:port, or dns:///name:port (round-robin).

    timeout: default deadline in seconds of each call (None = none); every method takes its own.
    TLS when tls=True: ca_cert (PEM file; None = system roots), client_cert + client_key (mutual
    TLS), tls_server_name (name to verify instead of the host). token: a bearer token sent as
    "authorization: Bearer ..." (default: $MOESERVE_TOKEN, if set).
    """

    def __init__(self, target: str, timeout: Optional[float] = None, *, tls: bool = False,
                 ca_cert: Optional[str] = None, client_cert: Optional[str] = None, client_key: Optional[str] = None,
                 tls_server_name: Optional[str] = None, token: Optional[str] = None, options: Sequence = ()):
        opts = [("grpc.lb_policy_name", "round_robin"), ("grpc.keepalive_time_ms", 30000)] + list(options)
        if tls:
            if (client_cert is None) != (client_key is None):
                raise ValueError("client_cert and client_key go together")
            if tls_server_name:
                opts.append(("grpc.ssl_target_name_override", tls_server_name))
            credentials = grpc.ssl_channel_credentials(_read(ca_cert), _read(client_key), _read(client_cert))
            self._channel = grpc.secure_channel(target, credentials, opts)
        else:
            if ca_cert or client_cert or client_key or tls_server_name:
                raise ValueError("ca_cert, client_cert, client_key and tls_server_name need tls=True")
            self._channel = grpc.insecure_channel(target, opts)
        self._stub = pb_grpc.InferenceStub(self._channel)
        self._health_check = self._channel.unary_unary(
            f"/{_health.SERVICE}/Check", request_serializer=_health.HealthCheckRequest.SerializeToString,
            response_deserializer=_health.HealthCheckResponse.FromString)
        self.timeout = timeout
        token = token if token is not None else os.environ.get("MOESERVE_TOKEN")
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None

    def close(self):
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def _timeout(self, timeout):
        return self.timeout if timeout is _DEFAULT else timeout

    def _unary(self, method, request, timeout):
        try:
            return method(request, timeout=self._timeout(timeout), metadata=self._metadata)
        except grpc.RpcError as e:
            raise MoeserveError.from_rpc(e) from None

    @staticmethod
    def request(prompt: Prompt, *, max_new_tokens: int = 0, temperature: float = 0.0, top_k: int = 0,
                top_p: Optional[float] = None, min_p: float = 0.0, repetition_penalty: Optional[float] = None,
                presence_penalty: float = 0.0, frequency_penalty: float = 0.0, seed: Optional[int] = None,
                stop: Union[str, Sequence[str]] = (), stop_token_ids: Sequence[int] = (), ignore_eos: bool = False,
                logprobs: int = 0, request_id: str = "", priority: int = 0):
        """The GenerateRequest message for these arguments (None = the server's default)."""
        r = pb.GenerateRequest(max_new_tokens=max_new_tokens, stop=[stop] if isinstance(stop, str) else list(stop),
                               stop_token_ids=list(stop_token_ids), ignore_eos=ignore_eos, logprobs=logprobs,
                               request_id=request_id, priority=priority)
        if isinstance(prompt, str):
            r.text = prompt
        else:
            r.token_ids.ids.extend(int(t) for t in prompt)
        s = r.sampling
        s.temperature, s.top_k, s.min_p = temperature, top_k, min_p
        s.presence_penalty, s.frequency_penalty = presence_penalty, frequency_penalty
        if top_p is not None:
            s.top_p = top_p
        if repetition_penalty is not None:
            s.repetition_penalty = repetition_penalty
        if seed is not None:
            s.seed = seed
        return r

    def generate(self, prompt: Prompt, *, timeout=_DEFAULT, **sampling) -> GenerateStream:
        """Streams the completion: an iterator of Chunk; the last one has finish_reason and
        moe_stats. Keyword arguments: those of request()."""
        request = self.request(prompt, **sampling)
        return GenerateStream(self._stub.Generate(request, timeout=self._timeout(timeout), metadata=self._metadata))

    def complete(self, prompt: Prompt, *, timeout=_DEFAULT, **sampling) -> Chunk:
        """The whole completion in one call (the stream's chunks concatenated)."""
        return Chunk.from_proto(self._unary(self._stub.Complete, self.request(prompt, **sampling), timeout))

    def tokenize(self, text: str, add_bos: bool = True, *, timeout=_DEFAULT) -> List[int]:
        return list(self.tokenize_pieces(text, add_bos, timeout=timeout)[0])

    def tokenize_pieces(self, text: str, add_bos: bool = True, *, timeout=_DEFAULT) -> Tuple[List[int], List[str]]:
        """(token ids, their pieces)."""
        r = self._unary(self._stub.Tokenize, pb.TokenizeRequest(text=text, add_bos=add_bos), timeout)
        return list(r.token_ids), list(r.pieces)

    def model_info(self, *, timeout=_DEFAULT):
        """The moeserve.v1.ModelInfo message (num_experts, vocab_size, max_context, ...)."""
        return self._unary(self._stub.GetModelInfo, pb.GetModelInfoRequest(), timeout)

    def health(self, service: str = "", *, timeout=_DEFAULT) -> str:
        """grpc.health.v1 Check: "SERVING", "NOT_SERVING", ... (service "" = the whole server, or
        "moeserve.v1.Inference"). Default deadline 5 s when the client has none."""
        t = self._timeout(timeout)
        r = self._unary(self._health_check, _health.HealthCheckRequest(service=service), 5.0 if t is None else t)
        return _health.STATUS_NAMES.get(r.status, "UNKNOWN")
