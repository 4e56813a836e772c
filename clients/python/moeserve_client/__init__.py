"""Python client of moeserve (gRPC, package moeserve.v1). See clients/python/README.md."""
from .client import (Chunk, Client, GenerateStream, LayerMoeStats, MoeserveError, TokenLogprob, TopLogprob)

__all__ = ["Chunk", "Client", "GenerateStream", "LayerMoeStats", "MoeserveError", "TokenLogprob", "TopLogprob"]
