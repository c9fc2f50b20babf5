"""Model files: the GGUF conversion runs once under a file lock and lands atomically; sources
are resolved from names and paths without any download."""

from __future__ import annotations

import threading
import time

import pytest
import torch
from _tiny_lm import tiny_model, tiny_tokenizer

from steerstats.backends import _local_model as lm
from steerstats.errors import ConfigError


def test_concurrent_conversions_convert_once(tmp_path, monkeypatch):
    import transformers

    gguf = tmp_path / "weights" / "Tiny.Q4.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"not really gguf, the loaders are replaced below")
    calls = []

    def fake_model(folder, gguf_file, **kw):
        calls.append(gguf_file)
        time.sleep(0.3)  # both threads are inside ensure_converted meanwhile
        return tiny_model(seed=9)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fake_model)
    monkeypatch.setattr(
        transformers.AutoTokenizer,
        "from_pretrained",
        lambda folder, gguf_file, **kw: tiny_tokenizer(),
    )
    source = lm.resolve_source("tiny", str(gguf))
    assert source.kind == "gguf"
    out: list = []
    threads = [
        threading.Thread(target=lambda: out.append(lm.ensure_converted(source, tmp_path)))
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and out[0] == out[1]
    assert (out[0] / "steerstats-conversion.json").is_file()
    assert not [p for p in out[0].parent.iterdir() if ".tmp-" in p.name]  # moved in atomically
    monkeypatch.undo()
    model, tok = lm.load_model(lm.ModelSource("hf_dir", out[0], "tiny"), tmp_path)
    ids = torch.tensor([tok("hello", add_special_tokens=False)["input_ids"]])
    with torch.inference_mode():
        torch.testing.assert_close(model(ids).logits, tiny_model(seed=9)(ids).logits)


def test_sources_from_paths_and_names(tmp_path):
    tiny_model().save_pretrained(tmp_path / "hf")
    assert lm.resolve_source("anything", str(tmp_path / "hf")).kind == "hf_dir"
    assert lm.resolve_source(str(tmp_path / "hf")).kind == "hf_dir"  # the model name is a path
    with pytest.raises(ConfigError, match="not a .gguf file or a directory with config.json"):
        lm.resolve_source("x", str(tmp_path))
    with pytest.raises(ConfigError, match="neither the packaged model"):
        lm.resolve_source("gpt-5")


def test_weights_fingerprint_changes_with_the_weights(tmp_path):
    tiny_model(seed=1).save_pretrained(tmp_path / "a")
    tiny_model(seed=2).save_pretrained(tmp_path / "b")
    a = lm.fingerprint(lm.resolve_source("m", str(tmp_path / "a")))
    b = lm.fingerprint(lm.resolve_source("m", str(tmp_path / "b")))
    assert a != b and a == lm.fingerprint(lm.resolve_source("m", str(tmp_path / "a")))
