"""``nnsight``: activation steering through nnsight, on a model here or on NDIF's cluster.

The local backend's interface and numbers (generation, ``vector`` steering for caa, caa+prompt
and random, ``next_token_probs`` and ``token_nll`` for the local judges, ``build_caa_vector``)
with every forward pass run as an nnsight trace (``_nnsight_engine``). With ``remote = true``
the traces run on NDIF (https://ndif.us), which serves models far larger than this machine.

Vectors: ``build_caa_vector`` is implemented here, by the same read-out as the local backend
run through traces, and digested with the local backend's identity for the same model, so a
vector built by either backend is found by both (same digests, same interventions, the same
cache keys except the backend name).

Options (``options = {...}`` of a ``[[models]]`` or ``[[judges]]`` entry):

- ``path``: a local Hugging Face directory or GGUF file; ``model`` may also be such a path,
  the packaged ``smollm2-135m-instruct``, or a Hugging Face model id (the only form NDIF runs);
- ``dtype``: ``"float32"`` (default) or ``"bfloat16"``; ``device_map`` (e.g. ``"auto"``);
- ``remote``: ``false`` (default), ``true`` (run on NDIF; needs ``NDIF_API_KEY`` in the
  environment, read per request and never stored), or ``"local"`` (nnsight serialises each
  request as for NDIF and runs it here: a dry run of the remote path);
- ``max_batch_size`` (default 16, 32 remote), ``batch_wait_s`` (default 0.005, 0.5 remote):
  each NDIF request waits in a queue, so remote batches are larger and wait to fill;
- ``cache_dir``, ``threads``: as for the local backend.

Only ``path`` and ``dtype`` (and the weights' digest, for local files) enter cache keys: the
same model here or on NDIF is the same model (NDIF's numerics may still flip near-ties).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from steerstats.backends._registry import backend
from steerstats.backends.base import Backend
from steerstats.backends.local import ANSWER_OPTIONS, LocalBackend, default_cache_dir
from steerstats.backends.vectors import FOLDER
from steerstats.errors import ConfigError, PrerequisiteError, pip_dependency_error

if TYPE_CHECKING:
    from steerstats.backends._local_engine import LocalEngine
    from steerstats.backends._local_model import ModelSource
    from steerstats.backends._nnsight_engine import NNsightEngine

RUN_OPTIONS = (
    "cache_dir", "max_batch_size", "batch_wait_s", "threads", "remote", "device_map")
API_KEY_VARIABLE = "NDIF_API_KEY"
REMOTE_BATCH_SIZE = 32
REMOTE_BATCH_WAIT_S = 0.5


def ndif_api_key() -> str:
    """``NDIF_API_KEY`` from the environment, or a PrerequisiteError naming it."""
    key = os.environ.get(API_KEY_VARIABLE, "").strip()
    if not key:
        raise PrerequisiteError(
            f"the nnsight backend with remote = true runs on NDIF and needs an API key: set the "
            f"{API_KEY_VARIABLE} environment variable (get one at https://login.ndif.us; keys "
            "are never read from the experiment file)"
        )
    return key


def _require_nnsight() -> None:
    try:
        import nnsight  # noqa: F401
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        raise pip_dependency_error(
            "the nnsight backend", ["nnsight", "torch", "transformers"], extra="nnsight"
        ) from exc


def _remote_mode(value: Any) -> bool | str:
    if isinstance(value, bool):
        return value
    if value == "local":
        return "local"
    raise ConfigError(
        f"nnsight backend: remote must be true, false or \"local\" (a dry run of the remote "
        f"path on this machine), got {value!r}"
    )


_engines_lock = threading.Lock()
_engines: dict[tuple[Any, ...], NNsightEngine] = {}


def _load(where: str, dtype: str, device_map: Any, dispatch: bool) -> Any:
    """The model wrapped by nnsight: loaded here (``dispatch``) or a weightless skeleton."""
    import torch
    from nnsight import TransformersModel

    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype):
        raise ConfigError(
            f"nnsight backend: dtype {dtype!r} is not a torch dtype; use float32 or bfloat16")
    kwargs: dict[str, Any] = {"dtype": torch_dtype}
    if device_map is not None:
        kwargs["device_map"] = device_map
    return TransformersModel(where, task="text-generation", dispatch=dispatch, **kwargs)


@backend("nnsight")
class NNsightBackend(LocalBackend):
    """A model run through nnsight traces, here or on NDIF, with the local backend's extras."""

    def __init__(self, model: str, options: Mapping[str, Any] | None = None) -> None:
        Backend.__init__(self, model, options)
        unknown = sorted(set(self.options) - set(ANSWER_OPTIONS) - set(RUN_OPTIONS))
        if unknown:
            raise ConfigError(
                f"nnsight backend: unknown option(s) {', '.join(map(repr, unknown))}; accepted: "
                f"{', '.join(ANSWER_OPTIONS + RUN_OPTIONS)}"
            )
        _require_nnsight()
        self.remote = _remote_mode(self.options.get("remote", False))
        if self.remote is True:
            ndif_api_key()  # fail now, not at the first request
        far = self.remote is True
        self.cache_dir = Path(self.options.get("cache_dir") or default_cache_dir())
        self.vector_dir = self.cache_dir / FOLDER
        self.max_batch_size = int(
            self.options.get("max_batch_size", REMOTE_BATCH_SIZE if far else 16))
        if self.max_batch_size < 1:
            raise ConfigError(
                f"nnsight backend: max_batch_size must be >= 1, got {self.max_batch_size}")
        self.batch_wait_s = float(
            self.options.get("batch_wait_s", REMOTE_BATCH_WAIT_S if far else 0.005))
        self.dtype = str(self.options.get("dtype", "float32"))
        self.device_map = self.options.get("device_map")
        self._engine: LocalEngine | None = None
        self._acquired = False
        self.source: ModelSource | None = self._local_source()
        if self.remote is True and self.source is not None:
            raise ConfigError(
                f"nnsight backend: NDIF runs models by their Hugging Face id, not local files; "
                f"{model!r} is a local model (set remote = false, or name the model's id)"
            )
        if "threads" in self.options:
            import torch

            torch.set_num_threads(int(self.options["threads"]))

    def _local_source(self) -> ModelSource | None:
        """The model's files here (as the local backend finds them), or None for a model id."""
        from steerstats.backends._local_model import PACKAGED_ALIASES, resolve_source

        path = self.options.get("path")
        if path is None and self.model.lower() not in PACKAGED_ALIASES:
            if not Path(self.model).expanduser().exists():
                return None
        return resolve_source(self.model, path)

    # -- identity ------------------------------------------------------------------------------

    def weights_digest(self) -> str | None:  # type: ignore[override]
        """The local files' digest (as the local backend computes it); None for a model id,
        which names its weights."""
        return None if self.source is None else super().weights_digest()

    def vector_identity(self) -> dict[str, Any]:
        """The local backend's identity for the same model, so both build and find the same
        vectors."""
        return {**self.identity(), "backend": "local"}

    # -- engine --------------------------------------------------------------------------------

    def _remote_backend(self, lm: Any) -> Callable[[], Any] | None:
        """A factory of the nnsight backend each trace runs on (None: here, directly)."""
        if self.remote is False:
            return None
        if self.remote == "local":
            from nnsight.intervention.backends.local import LocalSimulationBackend

            return lambda: LocalSimulationBackend(lm)
        # Sampled generation ships our logits processor; steerstats is not on the server.
        import nnsight
        from nnsight.intervention.backends.remote import RemoteBackend

        from steerstats.backends import _nnsight_sampling

        nnsight.register(_nnsight_sampling)
        key = lm.to_model_key()
        return lambda: RemoteBackend(
            key, api_key=ndif_api_key(), env=lm._remoteable_get_env(), blocking=True)

    def _build_engine(self) -> NNsightEngine:
        from steerstats.backends._local_model import ensure_converted
        from steerstats.backends._nnsight_engine import NNsightEngine

        where = self.model
        if self.source is not None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            folder = (ensure_converted(self.source, self.cache_dir)
                      if self.source.kind == "gguf" else self.source.path)
            where = str(folder)
        key = (where, self.dtype, repr(self.device_map), self.remote)
        with _engines_lock:
            if key not in _engines:
                lm = _load(where, self.dtype, self.device_map, dispatch=self.remote is not True)
                _engines[key] = NNsightEngine(
                    lm,
                    fingerprint=self.weights_digest(),
                    max_batch_size=self.max_batch_size,
                    batch_wait_s=self.batch_wait_s,
                    remote_backend=self._remote_backend(lm),
                )
            engine = _engines[key]
            engine.max_batch_size = max(engine.max_batch_size, self.max_batch_size)
            return engine

    async def engine(self) -> LocalEngine:
        """The shared nnsight engine (loading the model, or its skeleton, off the event loop)."""
        if self._engine is None:
            self._engine = await asyncio.to_thread(self._build_engine)
        if not self._acquired:
            self._engine.acquire()
            self._acquired = True
        return self._engine

    def should_retry(self, exc: BaseException) -> bool:
        """Dropped connections and refused sends to NDIF are worth retrying; a job that ran and
        failed is not."""
        if super().should_retry(exc):
            return True
        try:
            import httpx
            from nnsight.intervention.backends.remote import RemoteError
        except ImportError:
            return False
        if isinstance(exc, httpx.TransportError):
            return True
        return isinstance(exc, RemoteError) and str(exc).startswith("Failed to send request")
