"""steerstats: measure what steering a language model buys (behaviour) and costs (coherence,
capability), with clustered, paired and mixed-model statistics."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("steerstats")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+source"

__all__ = ["__version__"]
