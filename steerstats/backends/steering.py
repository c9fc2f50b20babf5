"""Activation steering vectors for transformers models: the value, applying it, reading activations.

A :class:`SteeringVector` is a plain value (layer + tensor + digest). Its hooks live exactly as
long as a ``with`` block and are removed in ``finally``, so no request, sweep step or exception
inherits another's steering (the steering-vectors library's pattern). ``layer`` counts decoder
blocks from 0; the vector is added to that block's output, i.e. to the residual stream that
``output_hidden_states`` reports as ``hidden_states[layer + 1]``, at every token position.

torch is imported by the caller (the local backend); this module only needs it at run time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "BatchSteering",
    "SteeringVector",
    "decoder_layers",
    "load_vector",
    "record_layer_outputs",
]


def decoder_layers(model: nn.Module) -> Sequence[nn.Module]:
    """The decoder blocks of a causal LM (Llama/Mistral/Qwen ``model.layers``, GPT-2 ``h``, ...)."""
    for path in ("model.layers", "model.decoder.layers", "transformer.h", "gpt_neox.layers"):
        obj: Any = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if obj is not None:
            return obj  # type: ignore[no-any-return]
    raise TypeError(
        f"cannot find the decoder layers of {type(model).__name__}; supported layouts are "
        "model.layers, model.decoder.layers, transformer.h and gpt_neox.layers"
    )


def _check_layer(model: nn.Module, layer: int) -> nn.Module:
    layers = decoder_layers(model)
    if not 0 <= layer < len(layers):
        raise ValueError(
            f"steering layer {layer} is out of range: the model has layers 0..{len(layers) - 1}"
        )
    return layers[layer]


def _replace_hidden(output: Any, hidden: torch.Tensor) -> Any:
    """A block's output with its hidden states swapped (blocks return a tensor or a tuple)."""
    if isinstance(output, tuple):
        return (hidden, *output[1:])
    return hidden


def _hidden(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


@dataclass(frozen=True)
class SteeringVector:
    """A residual-stream direction at one decoder layer, identified by the digest of its inputs.

    ``vector`` has shape ``(hidden_size,)``; ``meta`` is JSON-able provenance (how it was built,
    its norm, the model it came from).
    """

    layer: int
    vector: torch.Tensor
    digest: str = ""
    meta: Mapping[str, Any] = field(default_factory=dict)

    @contextmanager
    def apply(self, model: nn.Module, coefficient: float) -> Iterator[None]:
        """Add ``coefficient * vector`` to every position of the layer's output inside the block.

        A coefficient of exactly 0 registers no hook at all, so the model is bit-identical to
        the unsteered one (adding a zero tensor would turn -0.0 into +0.0).
        """
        with BatchSteering.patch(model, [(self, coefficient)], broadcast=True):
            yield

    def save(self, path: str | Path) -> None:
        """Write the vector as safetensors, with layer, digest and meta in the header."""
        from safetensors.torch import save_file

        header = {
            "layer": str(self.layer),
            "digest": self.digest,
            "meta": json.dumps(dict(self.meta)),
        }
        save_file({"vector": self.vector.detach().cpu().contiguous()}, str(path), metadata=header)


def load_vector(path: str | Path) -> SteeringVector:
    """Read a vector written by :meth:`SteeringVector.save`."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        header = f.metadata()
        vector = f.get_tensor("vector")
    return SteeringVector(
        layer=int(header["layer"]),
        vector=vector,
        digest=header.get("digest", ""),
        meta=json.loads(header.get("meta", "{}")),
    )


class BatchSteering:
    """Per-row steering for a batch: row ``i`` gets ``coefficient_i * vector_i`` at its layer.

    Rows without steering (None, or coefficient 0) are left bit-identical: the hook writes
    ``torch.where(row_is_steered, h + delta, h)``. Rows may use different vectors and layers;
    one hook per layer involved. :meth:`select` keeps a subset of rows when finished sequences
    are dropped from a running batch.
    """

    def __init__(
        self,
        model: nn.Module,
        rows: Sequence[tuple[SteeringVector, float] | None],
        broadcast: bool = False,
    ) -> None:
        import torch

        self.model = model
        self.broadcast = broadcast
        self._per_layer: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        param = next(model.parameters())
        active = [(i, r) for i, r in enumerate(rows) if r is not None and float(r[1]) != 0.0]
        for layer in sorted({r[0].layer for _, r in active}):
            _check_layer(model, layer)
            size = active[0][1][0].vector.shape[-1]
            delta = torch.zeros(len(rows), size, dtype=param.dtype, device=param.device)
            mask = torch.zeros(len(rows), dtype=torch.bool, device=param.device)
            for i, (vec, coef) in active:
                if vec.layer == layer:
                    delta[i] = float(coef) * vec.vector.to(dtype=param.dtype, device=param.device)
                    mask[i] = True
            self._per_layer[layer] = (delta, mask)
        self._handles: list[Any] = []

    @property
    def active(self) -> bool:
        """Whether any row is steered (if not, no hook is registered)."""
        return bool(self._per_layer)

    def select(self, rows: torch.Tensor) -> None:
        """Keep only ``rows`` (indices into the current batch), in that order."""
        if self.broadcast:
            return
        self._per_layer = {k: (d[rows], m[rows]) for k, (d, m) in self._per_layer.items()}

    def _hook(self, layer: int):  # type: ignore[no-untyped-def]
        import torch

        def hook(module: nn.Module, args: Any, output: Any) -> Any:
            delta, mask = self._per_layer[layer]
            hidden = _hidden(output)
            if self.broadcast:
                steered = hidden + delta[0]
            else:
                steered = torch.where(mask[:, None, None], hidden + delta[:, None, :], hidden)
            return _replace_hidden(output, steered)

        return hook

    def register(self) -> None:
        layers = decoder_layers(self.model)
        for layer in self._per_layer:
            # First in line, so hooks that read the block's output (transformers' own
            # output_hidden_states capture, record_layer_outputs) see the steered state.
            self._handles.append(
                layers[layer].register_forward_hook(self._hook(layer), prepend=True)
            )

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    @classmethod
    @contextmanager
    def patch(
        cls,
        model: nn.Module,
        rows: Sequence[tuple[SteeringVector, float] | None],
        broadcast: bool = False,
    ) -> Iterator[BatchSteering]:
        """Register the hooks for the block's duration; they are removed even if it raises."""
        steering = cls(model, rows, broadcast=broadcast)
        try:
            steering.register()
            yield steering
        finally:
            steering.remove()


@contextmanager
def record_layer_outputs(model: nn.Module, layer: int) -> Iterator[list[torch.Tensor]]:
    """Collect the hidden states leaving decoder block ``layer`` on each forward pass."""
    records: list[torch.Tensor] = []

    def hook(module: nn.Module, args: Any, output: Any) -> None:
        records.append(_hidden(output).detach())

    handle = _check_layer(model, layer).register_forward_hook(hook)
    try:
        yield records
    finally:
        handle.remove()
