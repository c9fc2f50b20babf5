"""The local backend's compute: batched generation and scoring on one transformers model.

One :class:`LocalEngine` per loaded model owns a worker thread. Async callers submit jobs; the
worker gathers jobs of the same kind that arrive together into one batch (left-padded, with
position ids from the attention mask and a KV cache), so concurrent requests share forward
passes while the event loop stays free. Sequences that finish are dropped from the running
batch.

Reproducibility: every sampled row draws from its own ``torch.Generator`` seeded by its
request, one uniform number per generated token, and picks the token by inverse CDF; greedy
rows (temperature 0) take the argmax. A response therefore does not depend on which other
requests shared its batch, except through float rounding in batched kernels (differences of
order 1e-6 in logits, which flip a token only when a draw lands that close to a CDF boundary).

Steering: each row may carry its own ``(SteeringVector, coefficient)``; rows without steering
are left bit-identical (see :class:`~steerstats.backends.steering.BatchSteering`), so batches
freely mix steered and unsteered requests.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from steerstats.backends.steering import BatchSteering, SteeringVector

RowSteering = tuple[SteeringVector, float] | None

# Score batches are split so that (rows x kept positions) stays below this many logit rows.
_SCORE_LOGIT_ROWS = 1024
_SCORE_BATCH_FACTOR = 4
# Rows sharing at least this many leading tokens share one prefix forward pass.
_MIN_SHARED_PREFIX = 8


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


@dataclass(frozen=True)
class GenRow:
    """One sequence to generate: prompt token ids, budget, sampling and steering."""

    prompt: Sequence[int]
    max_tokens: int
    temperature: float = 0.0
    seed: int = 0
    steering: RowSteering = None


@dataclass(frozen=True)
class GenOutput:
    """Generated token ids (without the stop token), why generation ended, batch timing."""

    tokens: list[int]
    finish_reason: str
    prompt_tokens: int
    batch_size: int
    batch_seconds: float
    batch_new_tokens: int


@dataclass(frozen=True)
class ScoreRow:
    """A forward pass over ``prompt + continuation``: log-probs of the continuation's tokens and,
    when ``candidates`` is given, of those token ids at the position after the sequence."""

    prompt: Sequence[int]
    continuation: Sequence[int] = ()
    steering: RowSteering = None
    candidates: Sequence[int] | None = None


@dataclass(frozen=True)
class ScoreOutput:
    token_logprobs: list[float]
    candidate_logprobs: list[float] | None


@dataclass
class _Job:
    kind: str  # "generate" | "score" | "call"
    payload: Any
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]


def _deliver(future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


def weights_fingerprint(model: torch.nn.Module) -> str:
    """Digest of a model's parameters (for in-memory models that have no file to hash)."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:24]


class LocalEngine:
    """A loaded model + tokenizer and its batch worker."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        fingerprint: str | None = None,
        max_batch_size: int = 8,
        batch_wait_s: float = 0.005,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        self.model = model.eval()
        # transformers 5 renamed forward's ``past_key_values`` to ``cache`` (the old name warns).
        self._cache_kw = ("cache" if "cache" in inspect.signature(model.forward).parameters
                          else "past_key_values")
        self.tokenizer = tokenizer
        self.fingerprint = fingerprint or weights_fingerprint(model)
        self.max_batch_size = max_batch_size
        self.batch_wait_s = batch_wait_s
        self.stop_ids = self._stop_ids()
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else sorted(self.stop_ids)[0])
        self._cond = threading.Condition()
        self._pending: list[_Job] = []
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._users = 0

    # -- tokens ------------------------------------------------------------------------------

    def _stop_ids(self) -> set[int]:
        ids: set[int] = set()
        for source in (
            self.tokenizer.eos_token_id,
            getattr(self.model.generation_config, "eos_token_id", None),
        ):
            if isinstance(source, int):
                ids.add(source)
            elif isinstance(source, list | tuple):
                ids.update(int(i) for i in source)
        if not ids:
            raise ValueError("the tokenizer and generation config define no end-of-sequence token")
        return ids

    def chat_ids(
        self, messages: Sequence[Mapping[str, str]], add_generation_prompt: bool = True
    ) -> list[int]:
        """Token ids of ``messages`` rendered with the model's chat template."""
        text = self.tokenizer.apply_chat_template(
            [dict(m) for m in messages], tokenize=False, add_generation_prompt=add_generation_prompt
        )
        return self.text_ids(text)

    def text_ids(self, text: str) -> list[int]:
        """Token ids of plain ``text`` (special-token markup in it is parsed, nothing is added)."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=True))

    def single_token_ids(self, text: str) -> list[int]:
        """Ids of the single tokens spelling ``text`` alone or after a space (e.g. "4", " 4")."""
        out: list[int] = []
        for variant in (text, " " + text):
            ids = self.text_ids(variant)
            if len(ids) == 1 and ids[0] not in out:
                out.append(ids[0])
        return out

    @property
    def n_layers(self) -> int:
        from steerstats.backends.steering import decoder_layers

        return len(decoder_layers(self.model))

    # -- compute (synchronous; the worker thread calls these) ------------------------------------

    def left_pad(
        self, seqs: Sequence[Sequence[int]]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            if len(s):
                ids[i, width - len(s) :] = torch.tensor(list(s), dtype=torch.long)
                mask[i, width - len(s) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        return ids, mask, positions

    def _new_cache(self) -> Any:
        from transformers import DynamicCache

        try:
            return DynamicCache(config=self.model.config)
        except TypeError:  # older transformers
            return DynamicCache()

    @staticmethod
    def _choose(
        logits: torch.Tensor, rows: Sequence[GenRow], gens: Sequence[torch.Generator | None]
    ) -> list[int]:
        chosen: list[int] = logits.argmax(-1).tolist()
        sampled = [j for j, row in enumerate(rows) if row.temperature > 0 and gens[j] is not None]
        if not sampled:
            return chosen
        # All sampled rows at once (one softmax and cumsum over the batch, not one per row);
        # each row still draws its own uniform number from its own generator.
        index = torch.tensor(sampled, dtype=torch.long)
        temps = torch.tensor([rows[j].temperature for j in sampled], dtype=torch.float64)
        cdf = torch.softmax(logits[index].double() / temps[:, None], dim=-1).cumsum(-1)
        u = torch.stack(
            [torch.rand((), generator=gens[j], dtype=torch.float64) for j in sampled]
        )
        picks = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True)[:, 0]
        for j, k in zip(sampled, picks.clamp(max=cdf.shape[-1] - 1).tolist(), strict=True):
            chosen[j] = int(k)
        return chosen

    @torch.inference_mode()
    def generate_rows(self, rows: Sequence[GenRow]) -> list[GenOutput]:
        """Generate every row in one left-padded batch with a KV cache."""
        start = time.perf_counter()
        n = len(rows)
        for row in rows:
            if len(row.prompt) == 0:
                raise ValueError("cannot generate from an empty prompt")
            if row.max_tokens < 1:
                raise ValueError(f"max_tokens must be >= 1, got {row.max_tokens}")
        ids, mask, positions = self.left_pad([r.prompt for r in rows])
        gens: list[torch.Generator | None] = []
        for r in rows:
            gens.append(torch.Generator().manual_seed(int(r.seed)) if r.temperature > 0 else None)
        tokens: list[list[int]] = [[] for _ in rows]
        finish: list[str] = ["length"] * n
        active = list(range(n))
        cache = self._new_cache()
        with BatchSteering.patch(self.model, [r.steering for r in rows]) as steering:
            out = self.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=positions,
                **{self._cache_kw: cache},
                use_cache=True,
                logits_to_keep=1,
            )
            logits = out.logits[:, -1, :]
            next_pos = positions[:, -1] + 1
            while True:
                chosen = self._choose(logits, [rows[i] for i in active], [gens[i] for i in active])
                keep: list[int] = []
                for j, i in enumerate(active):
                    if chosen[j] in self.stop_ids:
                        finish[i] = "stop"
                        continue
                    tokens[i].append(chosen[j])
                    if len(tokens[i]) < rows[i].max_tokens:
                        keep.append(j)
                if not keep:
                    break
                feed = torch.tensor(chosen, dtype=torch.long)
                if len(keep) < len(active):
                    index = torch.tensor(keep, dtype=torch.long)
                    cache.batch_select_indices(index)
                    mask, next_pos, feed = mask[index], next_pos[index], feed[index]
                    steering.select(index)
                    active = [active[j] for j in keep]
                mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=1)
                out = self.model(
                    input_ids=feed[:, None],
                    attention_mask=mask,
                    position_ids=next_pos[:, None],
                    **{self._cache_kw: cache},
                    use_cache=True,
                )
                logits = out.logits[:, -1, :]
                next_pos = next_pos + 1
        seconds = time.perf_counter() - start
        total = sum(len(t) for t in tokens)
        return [
            GenOutput(tokens[i], finish[i], len(rows[i].prompt), n, seconds, total)
            for i in range(n)
        ]

    @torch.inference_mode()
    def score_rows(self, rows: Sequence[ScoreRow]) -> list[ScoreOutput]:
        """Log-probabilities of continuations (and candidate next tokens).

        Rows with the same steering and a long common start (a judge's rubric, a chat
        template and system prompt) are grouped: the shared prefix is run once and its KV cache
        reused by every row of the group, which then runs only its own tail. Groups are split
        so that rows x kept logit positions stays bounded.
        """
        results: list[ScoreOutput | None] = [None] * len(rows)
        for row in rows:
            if len(row.prompt) == 0:
                raise ValueError("cannot score a continuation of an empty prompt")
        for group, prefix in self._prefix_groups(rows):
            chunk: list[int] = []
            for i in group:
                widest = max(len(rows[j].continuation) + 1 for j in [*chunk, i])
                if chunk and (len(chunk) + 1) * widest > _SCORE_LOGIT_ROWS:
                    self._score_chunk(rows, chunk, prefix, results)
                    chunk = []
                chunk.append(i)
            if chunk:
                self._score_chunk(rows, chunk, prefix, results)
        return [r for r in results if r is not None]

    @staticmethod
    def _steering_key(row: ScoreRow) -> tuple[str, float] | None:
        if row.steering is None or float(row.steering[1]) == 0.0:
            return None
        return (row.steering[0].digest or str(id(row.steering[0])), float(row.steering[1]))

    def _prefix_groups(self, rows: Sequence[ScoreRow]) -> list[tuple[list[int], int]]:
        """Row indices grouped by steering and common start, with the shared prefix length.

        The prefix stops before the first position whose logits any row of the group needs
        (the last prompt token), so every needed logit comes from the rows' own tails.
        """

        def sort_key(i: int) -> tuple[str, float, tuple[int, ...]]:
            key = self._steering_key(rows[i]) or ("", 0.0)
            return (key[0], key[1], tuple(rows[i].prompt))

        order = sorted(range(len(rows)), key=sort_key)
        groups: list[tuple[list[int], int]] = []
        for i in order:
            usable = len(rows[i].prompt) - 1
            if groups:
                members, prefix = groups[-1]
                last = rows[members[-1]]
                same_steering = self._steering_key(last) == self._steering_key(rows[i])
                common = _common_prefix(last.prompt, rows[i].prompt)
                shared = min(prefix, common, usable)
                if same_steering and shared >= _MIN_SHARED_PREFIX:
                    members.append(i)
                    groups[-1] = (members, shared)
                    continue
            groups.append(([i], usable))
        # A group of one shares nothing: run it whole.
        return [(m, p if len(m) > 1 else 0) for m, p in groups]

    def _score_chunk(
        self,
        rows: Sequence[ScoreRow],
        chunk: Sequence[int],
        prefix: int,
        results: list[ScoreOutput | None],
    ) -> None:
        members = [rows[i] for i in chunk]
        seqs = [list(r.prompt)[prefix:] + list(r.continuation) for r in members]
        ids, mask, _ = self.left_pad(seqs)
        keep = max(len(r.continuation) for r in members) + 1
        cache = None
        if prefix:  # one pass over the shared start (the group shares its steering too)
            cache = self._new_cache()
            head = torch.tensor([list(members[0].prompt)[:prefix]], dtype=torch.long)
            with BatchSteering.patch(self.model, [members[0].steering]):
                self.model(input_ids=head, **{self._cache_kw: cache}, use_cache=True,
                           logits_to_keep=1)
            cache.batch_repeat_interleave(len(members))
            mask = torch.cat([mask.new_ones((len(members), prefix)), mask], dim=1)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, prefix:]
        with BatchSteering.patch(self.model, [r.steering for r in members]):
            out = self.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=positions,
                **{self._cache_kw: cache},
                use_cache=cache is not None,
                logits_to_keep=keep,
            )
        logits = out.logits.float()
        for k, row in enumerate(members):
            n = len(row.continuation)
            logp = torch.log_softmax(logits[k], dim=-1)  # (keep, vocab); row k predicts token k+1
            token_lp: list[float] = []
            if n:
                target = torch.tensor(list(row.continuation), dtype=torch.long)
                token_lp = (
                    logp[keep - 1 - n : keep - 1].gather(-1, target[:, None]).squeeze(-1).tolist()
                )
            cand = None
            if row.candidates is not None:
                cand = logp[keep - 1, torch.tensor(list(row.candidates), dtype=torch.long)].tolist()
            results[chunk[k]] = ScoreOutput(token_lp, cand)

    # -- worker ------------------------------------------------------------------------------

    def acquire(self) -> None:
        """A backend starts using this engine (the worker runs while anyone does)."""
        with self._cond:
            self._users += 1

    def release(self) -> None:
        """A backend is done; the worker stops after its queue drains when no one is left."""
        with self._cond:
            self._users = max(0, self._users - 1)
            if self._users == 0:
                self._stopping = True
                self._cond.notify_all()

    async def submit(self, kind: str, payload: Any) -> Any:
        """Queue a job ("generate": GenRow, "score": ScoreRow, "call": a function) and await it."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        with self._cond:
            self._stopping = False
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._work, name="steerstats-local", daemon=True
                )
                self._thread.start()
            self._pending.append(_Job(kind, payload, loop, future))
            self._cond.notify_all()
        return await future

    def _take_batch(self) -> list[_Job] | None:
        with self._cond:
            while not self._pending:
                if self._stopping:
                    self._thread = None
                    return None
                self._cond.wait()
            kind = self._pending[0].kind
            # Scoring takes bigger batches: more rows share each prompt prefix, and the
            # logit budget in score_rows bounds the memory.
            limit = {"call": 1, "score": _SCORE_BATCH_FACTOR * self.max_batch_size}.get(
                kind, self.max_batch_size
            )
            deadline = time.monotonic() + self.batch_wait_s
            while limit > 1:
                same = sum(1 for j in self._pending if j.kind == kind)
                remaining = deadline - time.monotonic()
                if same >= limit or remaining <= 0:
                    break
                self._cond.wait(remaining)
            batch = [j for j in self._pending if j.kind == kind][:limit]
            for job in batch:
                self._pending.remove(job)
            return batch

    def _work(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            batch = [j for j in batch if not j.future.cancelled()]
            if not batch:
                continue
            kind = batch[0].kind
            values: list[Any] = []
            error: BaseException | None = None
            try:
                if kind == "generate":
                    values = list(self.generate_rows([j.payload for j in batch]))
                elif kind == "score":
                    values = list(self.score_rows([j.payload for j in batch]))
                else:
                    values = [batch[0].payload()]
            except BaseException as exc:  # delivered to every caller in the batch
                error = exc
            for i, job in enumerate(batch):
                value = values[i] if error is None else None
                try:
                    job.loop.call_soon_threadsafe(_deliver, job.future, value, error)
                except RuntimeError:  # the caller's event loop has closed
                    pass

    async def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the worker thread, serialised with batches (e.g. building a vector)."""
        return await self.submit("call", fn)
