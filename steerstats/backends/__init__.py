"""Where text comes from: the Backend protocol, its registry and the built-in backends."""

from steerstats.backends._registry import backend, create_backend, registry
from steerstats.backends.base import (
    Backend,
    GenerationRequest,
    GenerationResult,
    Message,
    Steering,
    TransientError,
)

__all__ = [
    "Backend",
    "GenerationRequest",
    "GenerationResult",
    "Message",
    "Steering",
    "TransientError",
    "backend",
    "create_backend",
    "registry",
]
