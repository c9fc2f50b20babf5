"""Steering methods: the Method protocol, its registry and the built-in methods."""

from steerstats.methods._registry import create_method, method, registry
from steerstats.methods.base import Intervention, Method, MethodContext, Query, ResolutionCache

__all__ = [
    "Intervention",
    "Method",
    "MethodContext",
    "Query",
    "ResolutionCache",
    "create_method",
    "method",
    "registry",
]
