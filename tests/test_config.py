"""Experiment files: validation, error messages, paths, presets and `steerstats init`."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pydantic
import pytest

from steerstats.config import (
    init_experiment,
    load_config,
    parse_config,
    preset_names,
    preset_text,
    slugify,
)
from steerstats.errors import ConfigError, SteerstatsError

MINIMAL = """
[experiment]
name = "t"

[[models]]
backend = "mock"
model = "m1"

[[methods]]
name = "control"

[queries]
items = [{ text = "be funny" }]

[prompts.open]
items = [{ text = "Tell me about cats." }]
"""


def write(tmp_path: Path, text: str, name: str = "exp.toml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def test_minimal_file_loads_with_defaults_and_is_frozen(tmp_path: Path) -> None:
    sub = tmp_path / "experiments"
    sub.mkdir()
    cfg = load_config(write(sub, MINIMAL))
    assert cfg.models[0].name == "m1"  # label defaults to the model id
    assert cfg.methods[0].column == "control"
    assert cfg.sampling.samples == 1 and cfg.sampling.max_tokens == 256
    assert cfg.cache_path == (sub / "cache").resolve()  # relative to the TOML file
    assert cfg.queries.items is not None and cfg.queries.items[0].query_id == "be-funny"
    assert cfg.text is not None and "[experiment]" in cfg.text
    with pytest.raises(pydantic.ValidationError):
        cfg.experiment.seed = 2  # type: ignore[misc]
    assert len(cfg.digest()) == 64
    assert cfg.digest() == load_config(sub / "exp.toml").digest()


def test_seed_defaults_to_the_experiment_seed(tmp_path: Path) -> None:
    cfg = parse_config(MINIMAL.replace('name = "t"', 'name = "t"\nseed = 7'))
    assert cfg.seed_for(None) == 7 and cfg.seed_for(3) == 3


def test_bad_toml_names_file_line_and_column(tmp_path: Path) -> None:
    p = write(tmp_path, MINIMAL.replace('name = "t"', 'name = "t'))
    with pytest.raises(ConfigError, match=r"exp\.toml: invalid TOML: .*line 3, column 10"):
        load_config(p)


def test_missing_file_suggests_init(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such experiment file.*steerstats init"):
        load_config(tmp_path / "nope.toml")


def test_unknown_method_lists_valid_methods(tmp_path: Path) -> None:
    p = write(tmp_path, MINIMAL + '\n[[methods]]\nname = "autosteeer"\n')
    with pytest.raises(ConfigError) as err:
        load_config(p)
    msg = str(err.value)
    assert "exp.toml: methods[1].name: unknown method 'autosteeer'" in msg
    assert "control" in msg and "prompt" in msg


def test_unknown_method_parameter_is_an_error(tmp_path: Path) -> None:
    text = MINIMAL + '\n[[methods]]\nname = "prompt"\nparams = { templat = "x {query}" }\n'
    with pytest.raises(
        ConfigError,
        match=r"methods\[1\]\.params: .*unknown parameter.*'templat'"
        r".*accepted: template",
    ):
        parse_config(text, "exp.toml")


def test_method_factory_value_errors_name_the_field() -> None:
    text = MINIMAL + '\n[[methods]]\nname = "prompt"\nparams = { template = "no placeholder" }\n'
    with pytest.raises(ConfigError, match=r"methods\[1\]\.params: .*must contain '\{query\}'"):
        parse_config(text, "exp.toml")


def test_strengths_on_a_method_without_strength() -> None:
    text = MINIMAL.replace('name = "control"', 'name = "control"\nstrengths = [1.0, 2.0]')
    with pytest.raises(ConfigError, match=r"methods\[0\]\.strengths: .*no strength knob"):
        parse_config(text, "exp.toml")


def test_strength_scale_is_the_feature_edit_name_for_strengths() -> None:
    base = MINIMAL.replace(
        'name = "control"',
        'name = "features"\nparams = { edits = [{ index = 1234, value = 0.4 }] }',
    )
    cfg = parse_config(
        base.replace("value = 0.4 }] }", "value = 0.4 }] }\nstrength_scale = [0, 0.5, 1]"),
        "exp.toml",
    )
    assert cfg.methods[0].strengths == (0.0, 0.5, 1.0)
    both = base.replace(
        "value = 0.4 }] }", "value = 0.4 }] }\nstrengths = [1]\nstrength_scale = [2]"
    )
    with pytest.raises(ConfigError, match=r"methods\[0\]\.strength_scale: unknown key"):
        parse_config(both, "exp.toml")  # one list, under either name


def test_missing_field_names_its_path() -> None:
    text = MINIMAL.replace('model = "m1"', "")
    with pytest.raises(ConfigError, match=r"exp\.toml: models\[0\]\.model: required field missing"):
        parse_config(text, "exp.toml")


@pytest.mark.parametrize(
    ("snippet", "where", "key"),
    [
        ("\n[extras]\nx = 1\n", "extras", "extras"),
        ("\n[sampling]\ntemprature = 0.5\n", r"sampling\.temprature", "temprature"),
        ('\n[[judges]]\nname = "x"\nrepeat = 2\n', r"judges\[0\]\.repeat", "repeat"),
    ],
)
def test_unknown_keys_are_errors(snippet: str, where: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"{where}: unknown key '{key}'; accepted keys here: "):
        parse_config(MINIMAL + snippet, "exp.toml")


def test_unknown_key_lists_accepted_keys() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(MINIMAL + "\n[sampling]\ntemprature = 0.5\n", "exp.toml")
    assert "temperature, max_tokens, seed, samples" in str(err.value)


def test_several_problems_are_listed_together() -> None:
    text = MINIMAL.replace('model = "m1"', "") + "\n[sampling]\nmax_tokens = 0\n"
    with pytest.raises(ConfigError) as err:
        parse_config(text, "exp.toml")
    msg = str(err.value)
    assert "2 problems" in msg and "models[0].model" in msg and "sampling.max_tokens" in msg


def test_unknown_backend_and_judge() -> None:
    with pytest.raises(ConfigError, match=r"models\[0\]\.backend: unknown backend 'mok'.*mock"):
        parse_config(MINIMAL.replace('backend = "mock"', 'backend = "mok"'), "exp.toml")
    with pytest.raises(ConfigError, match=r"judges\[0\]\.name: unknown judge 'nope'"):
        parse_config(MINIMAL + '\n[[judges]]\nname = "nope"\n', "exp.toml")
    with pytest.raises(ConfigError, match=r"judges\[0\]: .*give both backend and model"):
        parse_config(MINIMAL + '\n[[judges]]\nname = "nope"\nbackend = "mock"\n', "exp.toml")


def test_credentials_are_refused_in_the_file() -> None:
    text = MINIMAL.replace('model = "m1"', 'model = "m1"\noptions = { api_key = "sk-x" }')
    with pytest.raises(
        ConfigError, match=r"models\[0\]: options\.api_key not allowed.*environment"
    ):
        parse_config(text, "exp.toml")


def test_budget_needs_prices_for_every_model() -> None:
    text = MINIMAL + "\n[budget]\nmax_usd = 1.0\n"
    with pytest.raises(ConfigError, match=r"missing: m1.*\[pricing\.\"m1\"\]"):
        parse_config(text, "exp.toml")
    cfg = parse_config(text + '\n[pricing."m1"]\ninput = 0.1\noutput = 0.2\n', "exp.toml")
    assert cfg.pricing["m1"].output == 0.2


def test_duplicate_labels_and_conflicting_sources() -> None:
    dup = MINIMAL + '\n[[methods]]\nname = "prompt"\nlabel = "control"\n'
    with pytest.raises(ConfigError, match="duplicate label 'control'"):
        parse_config(dup, "exp.toml")
    both = MINIMAL.replace("[queries]", '[queries]\nset = "paper"')
    with pytest.raises(ConfigError, match="queries: give one of set, file or items"):
        parse_config(both, "exp.toml")


def test_plugins_are_imported_and_bad_ones_reported() -> None:
    text = MINIMAL.replace('name = "t"', 'name = "t"\nplugins = ["tests.collect_plugins"]')
    cfg = parse_config(text + '\n[[judges]]\nname = "test-length"\n', "exp.toml")
    assert cfg.judges[0].label == "test-length" and cfg.judges[0].rater_label == "auto"
    bad = MINIMAL.replace('name = "t"', 'name = "t"\nplugins = ["no_such_module_xyz"]')
    with pytest.raises(ConfigError, match=r"experiment\.plugins\[0\]: cannot import"):
        parse_config(bad, "exp.toml")


def test_slugify_matches_the_query_id_rule() -> None:
    assert slugify("be funny") == "be-funny"
    assert slugify("Be misleading, and ambiguous!") == "be-misleading-and-ambiguous"


def test_init_writes_a_preset_and_refuses_to_overwrite(tmp_path: Path) -> None:
    assert "openai" in preset_names()
    out = init_experiment(tmp_path / "my.toml", "openai")
    assert out.read_text() == preset_text("openai")
    assert out.read_text().lstrip().startswith("#")  # commented
    with pytest.raises(SteerstatsError, match="exists.*--force"):
        init_experiment(tmp_path / "my.toml", "openai")
    init_experiment(tmp_path / "my.toml", "openai", force=True)
    with pytest.raises(ConfigError, match="unknown preset 'nope'; shipped presets: .*openai"):
        init_experiment(tmp_path / "x.toml", "nope")
