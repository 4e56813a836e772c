"""A small, typed wrapper over moeserve's gRPC API with a streaming iterator.

    from moeserve_client import Client
    client = Client("localhost:50051")
    for chunk in client.generate("Experts are", max_new_tokens=32):
        print(chunk.text, end="", flush=True)

The generated stubs (moeserve.v1.inference_pb2*) come from the build: they are looked up in
$MOESERVE_PYTHON_STUBS, else in <repo>/build/python.
"""
import dataclasses
import os
import sys
from typing import Iterator, List, Optional, Sequence, Union

import grpc

_STUBS = os.environ.get("MOESERVE_PYTHON_STUBS") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "build", "python")
if _STUBS not in sys.path:
    sys.path.insert(0, _STUBS)
from moeserve.v1 import inference_pb2 as pb  # noqa: E402
from moeserve.v1 import inference_pb2_grpc as pb_grpc  # noqa: E402


@dataclasses.dataclass
class LayerStats:
    layer: int
    num_experts: int
    mean_active_experts: float
    routed_tokens: int
    expert_activations: int


@dataclasses.dataclass
class Chunk:
    token_ids: List[int]
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: Optional[str]          # None until the last chunk
    error: str = ""
    moe_stats: List[LayerStats] = dataclasses.field(default_factory=list)  # last chunk only

    @staticmethod
    def from_proto(r) -> "Chunk":
        reason = None if r.finish_reason == pb.FINISH_REASON_UNSPECIFIED else pb.FinishReason.Name(r.finish_reason)
        stats = [LayerStats(l.layer, l.num_experts, l.mean_active_experts, l.routed_tokens, l.expert_activations)
                 for l in r.moe_stats.layers]
        return Chunk(list(r.token_ids), r.text, r.prompt_tokens, r.completion_tokens, reason, r.error, stats)


class Client:
    """One channel to a moeserve target (host:port, or dns:///name:port for round-robin)."""

    def __init__(self, target: str, timeout: Optional[float] = None, token: Optional[str] = None,
                 root_certificates: Optional[bytes] = None):
        options = [("grpc.lb_policy_name", "round_robin"), ("grpc.keepalive_time_ms", 30000)]
        if root_certificates is not None:
            self._channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates), options)
        else:
            self._channel = grpc.insecure_channel(target, options)
        self._stub = pb_grpc.InferenceStub(self._channel)
        self._timeout = timeout
        self._metadata = [("authorization", f"Bearer {token}")] if token else None

    def close(self):
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @staticmethod
    def _request(prompt: Union[str, Sequence[int]], max_new_tokens=0, temperature=0.0, top_k=0, top_p=None,
                 min_p=0.0, seed=None, stop=(), stop_token_ids=(), ignore_eos=False, logprobs=0, request_id="",
                 priority=0):
        r = pb.GenerateRequest(max_new_tokens=max_new_tokens, stop=list(stop), stop_token_ids=list(stop_token_ids),
                               ignore_eos=ignore_eos, logprobs=logprobs, request_id=request_id, priority=priority)
        if isinstance(prompt, str):
            r.text = prompt
        else:
            r.token_ids.ids.extend(int(t) for t in prompt)
        r.sampling.temperature = temperature
        r.sampling.top_k = top_k
        r.sampling.min_p = min_p
        if top_p is not None:
            r.sampling.top_p = top_p
        if seed is not None:
            r.sampling.seed = seed
        return r

    def generate(self, prompt: Union[str, Sequence[int]], **kwargs) -> Iterator[Chunk]:
        """Streams the completion; the last chunk has finish_reason and moe_stats."""
        for r in self._stub.Generate(self._request(prompt, **kwargs), timeout=self._timeout, metadata=self._metadata):
            yield Chunk.from_proto(r)

    def complete(self, prompt: Union[str, Sequence[int]], **kwargs) -> Chunk:
        return Chunk.from_proto(self._stub.Complete(self._request(prompt, **kwargs), timeout=self._timeout,
                                                    metadata=self._metadata))

    def tokenize(self, text: str, add_bos: bool = True) -> List[int]:
        r = self._stub.Tokenize(pb.TokenizeRequest(text=text, add_bos=add_bos), timeout=self._timeout,
                                metadata=self._metadata)
        return list(r.token_ids)

    def model_info(self):
        return self._stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=self._timeout, metadata=self._metadata)

    def health(self, service: str = "") -> str:
        """grpc.health.v1 Check: "SERVING", "NOT_SERVING", ... (no extra package needed: the
        two messages are encoded by hand, field 1 of each)."""
        request = b"" if not service else b"\x0a" + bytes([len(service)]) + service.encode()
        check = self._channel.unary_unary("/grpc.health.v1.Health/Check", request_serializer=lambda b: b,
                                          response_deserializer=lambda b: b)
        raw = check(request, timeout=self._timeout or 5)
        status = raw[1] if len(raw) >= 2 and raw[0] == 0x08 else 0
        return {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}.get(status, "UNKNOWN")
