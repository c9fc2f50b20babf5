"""Steering vectors by digest: the one place that stores and finds them.

A vector is content-addressed (its digest covers the model weights and everything that built
it), so one process-wide store serves every backend: in memory once loaded, and on disk as
``<cache_dir>/caa_vectors/<digest>.safetensors`` under every cache directory registered with
it (the folder keeps the name it has always had, so existing caches still resolve). A method
that builds a vector puts it here; a backend that applies a ``vector`` steering gets it here.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from steerstats.backends.steering import SteeringVector

__all__ = ["FOLDER", "VectorStore", "vector_store"]

FOLDER = "caa_vectors"


class VectorStore:
    """Vectors in memory and in the ``caa_vectors`` folders of registered cache directories."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._memory: dict[str, SteeringVector] = {}
        self._folders: list[Path] = []

    def add_cache_dir(self, cache_dir: str | Path) -> Path:
        """Search (and write to) ``<cache_dir>/caa_vectors`` too; returns that folder.

        Synchronous and call-free, so methods may use it in dry runs."""
        folder = Path(cache_dir) / FOLDER
        with self._lock:
            if folder not in self._folders:
                self._folders.append(folder)
        return folder

    def folders(self, first: Path | None = None) -> list[Path]:
        """The folders searched, ``first`` (a backend's own) ahead of the others."""
        with self._lock:
            return [*([first] if first else []), *(f for f in self._folders if f != first)]

    def path(self, folder: Path, digest: str) -> Path:
        return folder / f"{digest}.safetensors"

    def has(self, digest: str) -> bool:
        """Whether ``digest`` is in memory or on disk (loads nothing)."""
        with self._lock:
            if digest in self._memory:
                return True
        return any(self.path(f, digest).is_file() for f in self.folders())

    def get(self, digest: str) -> SteeringVector | None:
        """The vector ``digest`` from memory or the first folder that holds it, else None."""
        from steerstats.backends.steering import load_vector

        with self._lock:
            known = self._memory.get(digest)
        if known is not None:
            return known
        for folder in self.folders():
            path = self.path(folder, digest)
            if path.is_file():
                vector = load_vector(path)
                with self._lock:
                    self._memory[digest] = vector
                return vector
        return None

    def put(self, vector: SteeringVector, cache_dir: str | Path | None = None) -> None:
        """Keep ``vector`` in memory and, with ``cache_dir``, write it to its folder there
        (atomically: a reader never sees half a file)."""
        with self._lock:
            self._memory[vector.digest] = vector
        if cache_dir is None:
            return
        folder = self.add_cache_dir(cache_dir)
        folder.mkdir(parents=True, exist_ok=True)
        path = self.path(folder, vector.digest)
        if not path.exists():
            tmp = path.with_suffix(f".tmp-{threading.get_ident()}")
            vector.save(tmp)
            tmp.replace(path)

    def forget(self, digest: str) -> None:
        """Drop ``digest`` from memory (its files stay; the next :meth:`get` reloads it)."""
        with self._lock:
            self._memory.pop(digest, None)

    def clear(self) -> None:
        """Forget every vector held in memory and every registered folder (files stay)."""
        with self._lock:
            self._memory.clear()
            self._folders.clear()

    def random_like(self, digest: str, seed: int, cache_dir: str | Path | None = None) -> str:
        """A random direction with the norm and layer of vector ``digest``; returns its digest.

        The direction is drawn from a standard normal with ``seed`` (the same seed and base
        vector always give the same vector), the placebo of vector-steering studies: it
        separates what a direction buys from what any perturbation of that size costs."""
        import torch

        from steerstats.backends.steering import SteeringVector

        new = hashlib.sha256(f"random:{digest}:{int(seed)}".encode()).hexdigest()[:24]
        if self.has(new):
            return new
        base = self.get(digest)
        if base is None:
            raise KeyError(f"steering vector {digest} is not in memory or in {self.folders()}")
        gen = torch.Generator().manual_seed(int(seed))
        direction = torch.randn(base.vector.shape, generator=gen, dtype=torch.float32)
        norm = float(base.vector.float().norm())
        vector = (direction / direction.norm() * norm).to(base.vector.dtype)
        meta = {"random_of": digest, "seed": int(seed), "norm": norm,
                "typical_norm": base.meta.get("typical_norm")}
        self.put(SteeringVector(layer=base.layer, vector=vector, digest=new, meta=meta),
                 cache_dir)
        return new


vector_store = VectorStore()
"""The process-wide store every local backend and vector method uses."""
