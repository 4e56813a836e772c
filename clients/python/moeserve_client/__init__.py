"""Python client of moeserve (gRPC, package moeserve.v1)."""
from .client import Chunk, Client, LayerStats

__all__ = ["Chunk", "Client", "LayerStats"]
