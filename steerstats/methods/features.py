"""``features``: an explicit list of SAE features and strengths from the experiment file.

Each entry names a feature by SAE ``index`` (its uuid and label are looked up once and cached
unless given as ``id``/``label``) or by exact ``label`` (found by feature search; an unknown or
ambiguous label is an error listing what the search did find), with a ``value``. The same
edits are used for every query; a ``strengths`` sweep scales them (0 = unsteered).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from steerstats.backends.feature_edits import FeatureEdit, describe_validation_error
from steerstats.errors import ConfigError
from steerstats.methods._feature_steering import (
    backend_extra,
    feature_intervention,
    resolution_key,
)
from steerstats.methods._registry import method
from steerstats.methods.base import (
    CachePeek,
    Intervention,
    Method,
    MethodContext,
    Query,
    ResolutionCall,
)

LOOKUP_NAMESPACE = "goodfire.lookup"
SEARCH_NAMESPACE = "goodfire.search"
LABEL_SEARCH_K = 20


class FeatureSpec(BaseModel):
    """One configured feature: ``index`` (optionally with ``id`` and ``label``) or ``label``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    value: float = Field(allow_inf_nan=False)
    index: int | None = Field(default=None, ge=0)
    id: str | None = None
    label: str | None = None

    @model_validator(mode="after")
    def _identified(self) -> FeatureSpec:
        if self.id is not None and self.index is None:
            raise ValueError("an 'id' needs the feature's SAE 'index' too")
        if self.index is None and not self.label:
            raise ValueError("give the feature's SAE 'index' or its exact 'label'")
        return self


class ExplicitFeatures(Method):
    uses_strength = True

    def __init__(self, edits: Sequence[Mapping[str, Any]]) -> None:
        if isinstance(edits, Mapping) or not edits:
            raise ConfigError(
                "method 'features': 'edits' must be a non-empty list of tables such as "
                '{index = 1234, value = 0.4} or {label = "...", value = 0.4}'
            )
        specs = []
        for n, item in enumerate(edits, 1):
            try:
                specs.append(FeatureSpec.model_validate(item))
            except ValidationError as exc:
                raise ConfigError(
                    f"method 'features': edits entry {n} ({item!r}) is invalid: "
                    f"{describe_validation_error(exc)}"
                ) from None
        self.specs = specs

    async def resolve(
        self, query: Query, strength: float | None, ctx: MethodContext
    ) -> Intervention:
        need_lookup = sorted({s.index for s in self.specs if s.index is not None and s.id is None})
        by_index: dict[int, dict[str, Any]] = {}
        if need_lookup:
            call = backend_extra(ctx.backend, "lookup_features", "features")
            key = resolution_key(ctx.backend, indices=need_lookup)
            found = await ctx.cache.get_or_compute(LOOKUP_NAMESPACE, key, lambda: call(need_lookup))
            by_index = {int(f["index"]): f for f in found}
            missing = [i for i in need_lookup if i not in by_index]
            if missing:
                raise ConfigError(
                    f"method 'features': model {ctx.backend.model!r} has no feature(s) with index "
                    f"{', '.join(map(str, missing))}"
                )
        edits = []
        for spec in self.specs:
            if spec.index is None:
                feature = await self._by_label(str(spec.label), ctx)
            elif spec.id is not None:
                feature = {"id": spec.id, "index": spec.index, "label": spec.label or ""}
            else:
                feature = dict(by_index[spec.index])
                if spec.label:
                    feature["label"] = spec.label
            edits.append(
                FeatureEdit(
                    id=feature["id"],
                    index=feature["index"],
                    label=feature["label"],
                    value=spec.value,
                )
            )
        return feature_intervention(edits, strength, "features", query)

    def estimate_resolution(
        self, query: Query, strength: float | None, ctx: MethodContext, cached: CachePeek
    ) -> list[ResolutionCall]:
        """One lookup of the indices without an id, one search per feature given by label."""
        calls = []
        need_lookup = sorted({s.index for s in self.specs if s.index is not None and s.id is None})
        if need_lookup:
            backend_extra(ctx.backend, "lookup_features", "features")
            calls.append(ResolutionCall("feature lookup", ctx.backend, LOOKUP_NAMESPACE,
                                        resolution_key(ctx.backend, indices=need_lookup)))
        for spec in self.specs:
            if spec.index is None:
                backend_extra(ctx.backend, "search_features", "features")
                key = resolution_key(ctx.backend, query=str(spec.label), k=LABEL_SEARCH_K)
                calls.append(ResolutionCall("feature search", ctx.backend, SEARCH_NAMESPACE, key))
        return calls

    async def _by_label(self, label: str, ctx: MethodContext) -> dict[str, Any]:
        call = backend_extra(ctx.backend, "search_features", "features")
        key = resolution_key(ctx.backend, query=label, k=LABEL_SEARCH_K)
        found = await ctx.cache.get_or_compute(
            SEARCH_NAMESPACE, key, lambda: call(label, LABEL_SEARCH_K)
        )
        matches = [
            f for f in found if str(f["label"]).strip().casefold() == label.strip().casefold()
        ]
        if len(matches) == 1:
            return dict(matches[0])
        seen = "; ".join(f"{f['index']}: {f['label']}" for f in found[:10]) or "nothing"
        problem = "matches several features" if matches else "matches no feature exactly"
        raise ConfigError(
            f"method 'features': label {label!r} {problem} of model {ctx.backend.model!r}; "
            f"the search found {seen}. Give the feature's 'index' instead."
        )


@method("features")
def features(
    edits: Sequence[Mapping[str, Any]],
) -> Method:
    """Steer with the listed features (by SAE index or exact label) and values, scaled by each
    step of the ``strengths`` sweep."""
    return ExplicitFeatures(edits)
