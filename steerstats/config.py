"""The experiment spec: a TOML file in, frozen validated objects out.

Unknown keys are errors (every model forbids extras); names of methods, judges and backends
and their parameters are checked against the registries when the file is loaded, so a typo is
a :class:`~steerstats.errors.ConfigError` naming the file, the field and what was expected,
before anything runs. Relative paths (cache directory, query and prompt files) are relative to
the TOML file. ``steerstats init my.toml --preset NAME`` copies a shipped preset
(``steerstats/presets/NAME.toml``) as a commented starting point.

Longer than most modules because it is one cohesive job: the experiment file's schema, its
validation and the messages that name file and field, in one place a reader can check.
"""

from __future__ import annotations

import importlib
import re
import tomllib
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from steerstats.backends.base import SECRET_OPTION_NAMES
from steerstats.errors import ConfigError, SteerstatsError
from steerstats.keys import cache_key
from steerstats.redact import secret_name

__all__ = [
    "BudgetSpec",
    "ConcurrencySpec",
    "Experiment",
    "ExperimentSection",
    "JudgeSpec",
    "MMLUSpec",
    "MethodSpec",
    "ModelSpec",
    "OpenPromptsSpec",
    "PriceSpec",
    "PromptItem",
    "PromptsSpec",
    "QueriesSpec",
    "QueryItem",
    "RetrySpec",
    "SamplingSpec",
    "init_experiment",
    "load_config",
    "parse_config",
    "preset_names",
    "preset_text",
    "slugify",
]


class _Spec(BaseModel):
    # NaN and infinity are never a valid number in an experiment file (strengths, budgets...).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def slugify(text: str) -> str:
    """The id of a query from its text ("be funny" -> "be-funny"): the datasets' rule."""
    from steerstats.datasets import slugify as dataset_slugify

    return str(dataset_slugify(text))


class ExperimentSection(_Spec):
    """[experiment]: a name, the default seed, where the cache lives and plug-in modules."""

    name: str = Field(min_length=1)
    seed: int = 0
    cache_dir: str = "cache"
    # Modules imported before names are checked, so their @method/@judge/@backend decorators
    # register (installed packages can use the 'steerstats' entry-point group instead).
    plugins: tuple[str, ...] = ()


class ModelSpec(_Spec):
    """[[models]] (the models steered) and [[helpers]] (chat models methods may call)."""

    label: str | None = None
    backend: str
    model: str = Field(min_length=1)
    options: dict[str, Any] = Field(default_factory=dict)

    @property
    def name(self) -> str:
        """The label used in tables (defaults to the model id)."""
        return self.label or self.model

    @model_validator(mode="after")
    def _no_secrets(self) -> ModelSpec:
        _reject_secret_options(self.options, self.backend)
        return self


# Where each backend reads its credential from (named in the error for a key in the file).
_KEY_ENV = {"openai": "OPENAI_API_KEY", "goodfire": "GOODFIRE_API_KEY"}


def _secret_paths(value: Any, path: str) -> list[str]:
    """Dotted paths of credential-looking names anywhere in nested options."""
    out: list[str] = []
    if isinstance(value, Mapping):
        for k, v in value.items():
            here = f"{path}.{k}" if path else str(k)
            if str(k).lower() in SECRET_OPTION_NAMES or secret_name(str(k)):
                out.append(here)
            else:
                out.extend(_secret_paths(v, here))
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            out.extend(_secret_paths(v, f"{path}[{i}]"))
    return out


def _reject_secret_options(options: Mapping[str, Any], backend: str | None) -> None:
    bad = _secret_paths(options, "options")
    if bad:
        env = _KEY_ENV.get(backend or "", f"the {backend} backend's key environment variable")
        raise ValueError(
            f"{', '.join(bad)} not allowed: looks like a credential; credentials come only from "
            f"the environment ({env}), never from the experiment file (which is copied into "
            "results and keyed into the cache)"
        )


class MethodSpec(_Spec):
    """[[methods]]: a registered method, its parameters and an optional strength sweep."""

    name: str
    label: str | None = None
    # `strength_scale` is the name Goodfire feature-edit sweeps use for the same list.
    strengths: tuple[float, ...] | None = Field(
        default=None, validation_alias=AliasChoices("strengths", "strength_scale"))
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("strengths")
    @classmethod
    def _some_strengths(cls, v: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if v is not None and not v:
            raise ValueError("strengths is empty; give at least one strength or remove it")
        return v

    @property
    def column(self) -> str:
        """The tidy tables' ``method`` value (label, else name)."""
        return self.label or self.name


class QueryItem(_Spec):
    """An inline steering query; ``id`` defaults to the slug of ``text``."""

    text: str = Field(min_length=1)
    id: str | None = None
    criteria: str | None = None
    sentiment: Literal["positive", "negative"] | None = None  # for the sentiment judge

    @model_validator(mode="after")
    def _has_id(self) -> QueryItem:
        if self.id is None and not re.search(r"[A-Za-z0-9]", self.text):
            raise ValueError("text has no letters or digits to make an id from; give id = ...")
        return self

    @property
    def query_id(self) -> str:
        return self.id or slugify(self.text)


class QueriesSpec(_Spec):
    """[queries]: a shipped set by name, a file, or inline items; optional ``limit`` / ``ids``."""

    set: str | None = None
    file: str | None = None
    items: tuple[QueryItem, ...] | None = Field(default=None, min_length=1)
    limit: int | None = Field(default=None, ge=1)
    ids: tuple[str, ...] | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_source(self) -> QueriesSpec:
        given = [k for k in ("set", "file", "items") if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"give one of set, file or items, not {' and '.join(given)}")
        return self

    @property
    def source(self) -> str:
        return self.set if self.set is not None else (self.file or "inline")


class PromptItem(_Spec):
    """An inline or file prompt. With ``query_id`` it belongs to that query only (a topic
    prompt, id ``<query_id>/<id>``); without, every query gets it (a common prompt)."""

    text: str = Field(min_length=1)
    id: str | None = None
    query_id: str | None = None


class OpenPromptsSpec(_Spec):
    """[prompts.open]: shipped topic + sampled common prompts, or your own (file / items)."""

    n_topic: int | None = Field(default=None, ge=0)
    n_common: int = Field(default=20, ge=0)
    seed: int | None = None
    # true: every query gets the same common prompts (prompt crossed with query); false: each
    # query draws its own, as the original study did
    crossed: bool = True
    file: str | None = None
    items: tuple[PromptItem, ...] | None = Field(default=None, min_length=1)
    # the system message of this set's requests when the method sends none (see PromptsSpec)
    system: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_source(self) -> OpenPromptsSpec:
        if self.file is not None and self.items is not None:
            raise ValueError("give file or items, not both")
        return self


class MMLUSpec(_Spec):
    """[prompts.mmlu]: ``n`` questions stratified by subject (all when omitted), from the
    shipped "paper" set or a JSONL file (relative to the experiment file). ``template`` words
    each question with the placeholders {question}, {choices} (one "A. ..." line each) and
    {letters} ("A, B, C, D"); without it steerstats' own wording is used."""

    n: int | None = Field(default=None, ge=1)
    seed: int | None = None
    source: str = "paper"
    system: str | None = Field(default=None, min_length=1)
    template: str | None = Field(default=None, min_length=1)

    @field_validator("template")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value is not None:
            from steerstats.datasets import mmlu_template_problem

            problem = mmlu_template_problem(value)
            if problem is not None:
                raise ValueError(problem)
        return value


class PromptsSpec(_Spec):
    """[prompts.open] and [prompts.mmlu]. A set's ``system`` is the system message of its
    requests whose method sends none (control, autosteer, agentic); a method's own system
    prompt (prompt, autosteer+prompt) replaces it, as the seed study's prompt method replaced
    its MMLU system message. Unset, nothing is added (and cache keys are unchanged)."""

    open: OpenPromptsSpec | None = None
    mmlu: MMLUSpec | None = None

    @model_validator(mode="after")
    def _some(self) -> PromptsSpec:
        if self.open is None and self.mmlu is None:
            raise ValueError("give [prompts.open] and/or [prompts.mmlu]")
        return self

    def system_for(self, prompt_set: str) -> str | None:
        """The ``system`` message of prompt set ``prompt_set`` ("open" or "mmlu"), if given."""
        spec = {"open": self.open, "mmlu": self.mmlu}.get(prompt_set)
        return None if spec is None else spec.system


class SamplingSpec(_Spec):
    """[sampling]: how responses are generated; ``samples`` replicates per prompt."""

    temperature: float = Field(default=0.7, ge=0)
    max_tokens: int = Field(default=256, ge=1)
    seed: int | None = None
    samples: int = Field(default=1, ge=1)


class JudgeSpec(_Spec):
    """[[judges]]: a registered judge, the chat model it runs on (if any) and ``repeats``."""

    name: str
    backend: str | None = None
    model: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    repeats: int | None = Field(default=None, ge=1)
    params: dict[str, Any] = Field(default_factory=dict)
    rater: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _one_owner(cls, data: Any) -> Any:
        """``repeats`` and ``rater`` belong to the judge entry; a ``params.*`` spelling of either
        moves here (given twice with different values is an error), so judges never see them."""
        if not isinstance(data, dict) or not isinstance(data.get("params"), dict):
            return data
        params = dict(data["params"])
        out = dict(data)
        for key in ("repeats", "rater"):
            if key in params:
                theirs, ours = params.pop(key), data.get(key)
                if ours is not None and ours != theirs:
                    raise ValueError(f"{key} is given twice ({ours!r} and params.{key} = "
                                     f"{theirs!r}); keep one")
                out[key] = theirs
        out["params"] = params
        return out

    @model_validator(mode="after")
    def _backend_and_model(self) -> JudgeSpec:
        _reject_secret_options(self.options, self.backend)
        if (self.backend is None) != (self.model is None):
            raise ValueError("give both backend and model (a chat judge) or neither (computed)")
        return self

    @property
    def rater_label(self) -> str:
        """The scores table's ``rater``: given (here or in params), else the judge model,
        else 'auto' (computed judges)."""
        return self.rater or self.model or "auto"

    @property
    def label(self) -> str:
        """Identifies the judge in status and manifests: ``name`` or ``name/rater``."""
        return self.name if self.rater_label == "auto" else f"{self.name}/{self.rater_label}"


class BudgetSpec(_Spec):
    """[budget]: caps over the whole experiment (what the cache records), never exceeded."""

    max_usd: float | None = Field(default=None, gt=0)
    max_calls: int | None = Field(default=None, ge=1)


class ConcurrencySpec(_Spec):
    """[concurrency]: calls in flight per backend name; ``default`` for unlisted backends
    (when omitted, each backend's own limit)."""

    default: int | None = Field(default=None, ge=1)
    backends: dict[str, int] = Field(default_factory=dict)

    @field_validator("backends")
    @classmethod
    def _positive(cls, v: dict[str, int]) -> dict[str, int]:
        bad = [k for k, n in v.items() if n < 1]
        if bad:
            raise ValueError(f"concurrency must be >= 1 for {', '.join(bad)}")
        return v


class RetrySpec(_Spec):
    """[retries]: attempts per call, backoff and a per-attempt timeout."""

    max_attempts: int = Field(default=6, ge=1)
    base_delay_s: float = Field(default=1.0, ge=0)
    max_delay_s: float = Field(default=60.0, ge=0)
    timeout_s: float | None = Field(default=300.0, gt=0)
    # A server's Retry-After above this is capped here (and the cap is reported).
    max_retry_after_s: float = Field(default=300.0, ge=0)


class PriceSpec(_Spec):
    """[pricing."model-id"]: USD per million tokens."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)


class Experiment(_Spec):
    """A whole experiment file, validated. Load with :func:`load_config`."""

    experiment: ExperimentSection
    models: tuple[ModelSpec, ...] = Field(min_length=1)
    methods: tuple[MethodSpec, ...] = Field(min_length=1)
    queries: QueriesSpec = Field(default_factory=lambda: QueriesSpec(set="paper"))
    prompts: PromptsSpec
    sampling: SamplingSpec = Field(default_factory=SamplingSpec)
    judges: tuple[JudgeSpec, ...] = ()
    helpers: tuple[ModelSpec, ...] = ()
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    concurrency: ConcurrencySpec = Field(default_factory=ConcurrencySpec)
    retries: RetrySpec = Field(default_factory=RetrySpec)
    pricing: dict[str, PriceSpec] = Field(default_factory=dict)

    _path: Path | None = PrivateAttr(default=None)
    _text: str | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _unique_labels(self) -> Experiment:
        _unique([m.name for m in self.models], "models", "label")
        _unique([m.column for m in self.methods], "methods", "label")
        _unique([j.label for j in self.judges], "judges", "rater")
        helper_names = [h.name for h in self.helpers]
        _unique(helper_names, "helpers", "label")
        clash = sorted(set(helper_names) & {m.name for m in self.models})
        if clash:
            raise ValueError(f"helper label(s) {', '.join(clash)} also name a model; rename one")
        if self.budget.max_usd is not None:
            needed = {m.model for m in (*self.models, *self.helpers)}
            needed |= {j.model for j in self.judges if j.model is not None}
            missing = sorted(needed - set(self.pricing))
            if missing:
                raise ValueError(
                    f"budget.max_usd needs a price for every model; missing: {', '.join(missing)}."
                    f' Add [pricing."{missing[0]}"] input = ..., output = ... (USD per million '
                    "tokens; 0 for local models)"
                )
        return self

    # Paths and identity ------------------------------------------------------------------------
    @property
    def path(self) -> Path | None:
        """The TOML file this was loaded from."""
        return self._path

    @property
    def text(self) -> str | None:
        """The TOML text this was loaded from (copied into results directories)."""
        return self._text

    def resolve_path(self, value: str) -> Path:
        """``value`` relative to the experiment file's directory (absolute paths unchanged)."""
        p = Path(value).expanduser()
        if p.is_absolute() or self._path is None:
            return p
        return (self._path.parent / p).resolve()

    @property
    def cache_path(self) -> Path:
        return self.resolve_path(self.experiment.cache_dir)

    def digest(self) -> str:
        """SHA-256 of the canonical JSON of the validated spec (defaults filled in)."""
        return cache_key(self.model_dump(mode="json"))

    def seed_for(self, value: int | None) -> int:
        """A section's seed, defaulting to ``[experiment] seed``."""
        return self.experiment.seed if value is None else value

    def find_model(self, label: str) -> ModelSpec:
        for m in (*self.models, *self.helpers):
            if m.name == label:
                return m
        valid = ", ".join(m.name for m in (*self.models, *self.helpers))
        raise ConfigError(f"{self._where()}no model or helper labelled {label!r}; valid: {valid}")

    def _where(self) -> str:
        return f"{self._path}: " if self._path is not None else ""


def _unique(values: Sequence[str], section: str, field: str) -> None:
    seen: set[str] = set()
    dups: set[str] = set()
    for v in values:
        (dups if v in seen else seen).add(v)
    dup = sorted(dups)
    if dup:
        raise ValueError(
            f"{section}: duplicate {field} {', '.join(map(repr, dup))}; "
            f"give each a distinct {field}"
        )


# ---------------------------------------------------------------------------------------------
# Loading


def load_config(path: str | Path) -> Experiment:
    """Read and validate an experiment TOML file; errors name the file, field and expectation."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{p}: no such experiment file (create one with: steerstats init {p} --preset openai)"
        ) from None
    except IsADirectoryError:
        raise ConfigError(f"{p}: is a directory; give the experiment's TOML file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: {unicode_problem(text_bytes=exc.object, exc=exc)}") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read the experiment file: {exc.strerror}") from None
    return parse_config(text, source=p)


def unicode_problem(text_bytes: bytes, exc: UnicodeDecodeError) -> str:
    """One line for a file that is not UTF-8: where the first bad byte is (line, column)."""
    line = text_bytes.count(b"\n", 0, exc.start) + 1
    col = exc.start - (text_bytes.rfind(b"\n", 0, exc.start) + 1) + 1
    return (f"not UTF-8 text: byte 0x{text_bytes[exc.start]:02x} at line {line}, column {col}; "
            "save the file as UTF-8")


def parse_config(text: str, source: str | Path | None = None) -> Experiment:
    """Validate TOML ``text``; ``source`` (the file) anchors relative paths and error messages."""
    where = f"{source}" if source is not None else "<experiment>"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: invalid TOML: {exc}") from None
    _import_plugins(data, where)
    try:
        cfg = Experiment.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation(exc, where)) from None
    if source is not None:
        cfg._path = Path(source).resolve()
    cfg._text = text
    _check_registries(cfg, where)
    return cfg


def _import_plugins(data: Mapping[str, Any], where: str) -> None:
    section = data.get("experiment")
    plugins = section.get("plugins", []) if isinstance(section, Mapping) else []
    if not isinstance(plugins, list):
        return  # pydantic reports the type error
    for i, mod in enumerate(plugins):
        if not isinstance(mod, str):
            continue
        try:
            importlib.import_module(mod)
        except ImportError as exc:
            raise ConfigError(
                f"{where}: experiment.plugins[{i}]: cannot import module {mod!r} ({exc}); "
                "give an importable module name (on PYTHONPATH)"
            ) from None


def _loc(loc: Sequence[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out or "(top level)"


def _format_validation(exc: ValidationError, where: str) -> str:
    lines = []
    errors = exc.errors(include_url=False)
    nested = {tuple(e["loc"][:i]) for e in errors for i in range(1, len(e["loc"]))}
    for err in errors:
        loc = tuple(err["loc"])
        if err["type"] == "too_short" and loc in nested:
            continue  # "needs at least 1 item" only because an item was invalid: noise
        if err["type"] == "extra_forbidden":
            parent = _model_at(loc[:-1])
            accepted = ", ".join(parent.model_fields) if parent is not None else "see the preset"
            lines.append(f"{_loc(loc)}: unknown key {loc[-1]!r}; accepted keys here: {accepted}")
        elif err["type"] == "missing":
            lines.append(f"{_loc(loc)}: required field missing")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            got = err.get("input")
            shown = "" if isinstance(got, dict | list) else f" (got {got!r})"
            lines.append(f"{_loc(loc)}: {msg}{shown}")
    if len(lines) == 1:
        return f"{where}: {lines[0]}"
    return f"{where}: {len(lines)} problems:\n" + "\n".join(f"  {line}" for line in lines)


def _model_at(loc: Sequence[int | str]) -> type[BaseModel] | None:
    """The spec class at ``loc`` in the Experiment tree (for listing accepted keys)."""
    import types
    import typing

    cls: Any = Experiment
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)):
            return None
        info = cls.model_fields.get(part)
        if info is None:
            return None
        cls = info.annotation
        while True:  # unwrap Optional[...] / tuple[...]
            origin = typing.get_origin(cls)
            if origin in (typing.Union, types.UnionType):
                args = [a for a in typing.get_args(cls) if a is not type(None)]
                cls = args[0] if args else None
            elif origin in (tuple, list):
                cls = typing.get_args(cls)[0]
            elif origin is dict:
                cls = typing.get_args(cls)[1]
            else:
                break
    return cls if isinstance(cls, type) and issubclass(cls, BaseModel) else None


def _check_registries(cfg: Experiment, where: str) -> None:
    """Names and parameters of backends, methods and judges, checked by building them."""
    from steerstats.backends import registry as backends
    from steerstats.judges import create_judge
    from steerstats.methods import create_method

    def fail(loc: str, exc: Exception) -> ConfigError:
        return ConfigError(f"{where}: {loc}: {exc}")

    for section, specs in (("models", cfg.models), ("helpers", cfg.helpers)):
        for i, m in enumerate(specs):
            try:
                backends.get(m.backend)
            except ConfigError as exc:
                raise fail(f"{section}[{i}].backend", exc) from None
    for i, ms in enumerate(cfg.methods):
        try:
            meth = create_method(ms.name, dict(ms.params))
        except ConfigError as exc:
            loc = f"methods[{i}].name" if "unknown method" in str(exc) else f"methods[{i}].params"
            raise fail(loc, exc) from None
        except (TypeError, ValueError) as exc:
            raise fail(f"methods[{i}].params", exc) from None
        if ms.strengths is not None and not meth.uses_strength:
            raise ConfigError(
                f"{where}: methods[{i}].strengths: method {ms.name!r} has no strength knob; "
                "remove strengths"
            )
    for i, js in enumerate(cfg.judges):
        if js.backend is not None:
            try:
                backends.get(js.backend)
            except ConfigError as exc:
                raise fail(f"judges[{i}].backend", exc) from None
        try:
            create_judge(js.name, dict(js.params), repeats=js.repeats)
        except ConfigError as exc:
            loc = (f"judges[{i}].name" if "unknown judge" in str(exc) else
                   f"judges[{i}].repeats" if "repeats" in str(exc) else f"judges[{i}].params")
            raise fail(loc, exc) from None
        except (TypeError, ValueError) as exc:
            raise fail(f"judges[{i}].params", exc) from None
    for name in cfg.concurrency.backends:
        try:
            backends.get(name)
        except ConfigError as exc:
            raise fail(f"concurrency.backends.{name}", exc) from None


# ---------------------------------------------------------------------------------------------
# Presets


def _presets_dir() -> Any:
    return resources.files("steerstats") / "presets"


def preset_names() -> list[str]:
    """Shipped presets: every ``steerstats/presets/*.toml``."""
    d = _presets_dir()
    if not d.is_dir():
        return []
    return sorted(p.name[:-5] for p in d.iterdir() if p.name.endswith(".toml"))


def preset_text(name: str) -> str:
    """The commented TOML of preset ``name``; the error lists the shipped presets."""
    f = _presets_dir() / f"{name}.toml"
    if not f.is_file():
        raise ConfigError(
            f"unknown preset {name!r}; shipped presets: {', '.join(preset_names()) or '(none)'}"
        )
    return f.read_text(encoding="utf-8")


def init_experiment(path: str | Path, preset: str = "demo", force: bool = False) -> Path:
    """Write preset ``preset`` to ``path`` (refusing to overwrite unless ``force``)."""
    p = Path(path)
    text = preset_text(preset)
    if p.exists() and not force:
        raise SteerstatsError(f"{p} exists; choose another path or pass --force to overwrite it")
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text, encoding="utf-8")
    return p
