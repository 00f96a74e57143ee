"""Strict typed config: unknown keys and wrong types fail at load, naming the key."""

from pathlib import Path

import pytest
import yaml

from poseless.config import (
    ConfigError,
    Params,
    dump_schema_yaml,
    from_dict,
    load_params,
    to_dict,
)

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path, data) -> Path:
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


@pytest.mark.parametrize("name", ["params.yaml", "config/tiny.yaml"])
def test_shipped_configs_load(name):
    params = load_params(ROOT / name)
    assert isinstance(params, Params)


def test_config_dir_all_load():
    for path in sorted((ROOT / "config").glob("*.yaml")):
        load_params(path)


def test_unknown_key_names_file_and_dotted_key(tmp_path):
    p = write(tmp_path, {"prepare_data": {"synthetic": {"categroies": ["chair"]}}})
    with pytest.raises(
        ConfigError, match=r"params\.yaml: prepare_data\.synthetic\.categroies: unknown key"
    ):
        load_params(p)


def test_unknown_section(tmp_path):
    with pytest.raises(ConfigError, match=r"train_gna: unknown key"):
        load_params(write(tmp_path, {"train_gna": {}}))


def test_symmetric_sdf_at_pseudo_poses_needs_the_mirror_frame(tmp_path):
    run = {"train_recon": {"run": ["ura", "poseless"]}}
    with pytest.raises(ConfigError, match=r"poseless trains a mirror-symmetric SDF.*frame: mirror"):
        load_params(write(tmp_path, run))
    assert load_params(write(tmp_path, run | {"predict_poses": {"frame": "mirror"}}))
    asymmetric = {"experiments": {"poseless": {"sdf": {"symmetric": False}}}}
    assert load_params(write(tmp_path, {"train_recon": run["train_recon"] | asymmetric}))
    # shapeclipper learns its own viewpoints: any frame will do
    assert load_params(write(tmp_path, {"train_recon": {"run": ["shapeclipper"]}}))


@pytest.mark.parametrize(
    "data, match",
    [
        ({"seed": "zero"}, r"seed: expected an integer"),
        ({"seed": True}, r"seed: expected an integer"),
        ({"prepare_data": {"image_size": 6.5}}, r"prepare_data\.image_size: expected an integer"),
        ({"prepare_data": {"margin": "wide"}}, r"prepare_data\.margin: expected a number"),
        ({"prepare_data": {"on_bad_item": "ignore"}}, r"on_bad_item: 'ignore' is not one of"),
        ({"prepare_data": {"background": [1, 1]}}, r"background: expected 3 items"),
        ({"prepare_data": {"synthetic": {"categories": "chair"}}}, r"categories: expected a list"),
        ({"prepare_data": []}, r"prepare_data: expected a mapping"),
    ],
)
def test_wrong_types_name_the_key(tmp_path, data, match):
    with pytest.raises(ConfigError, match=match):
        load_params(write(tmp_path, data))


def test_int_is_accepted_for_float(tmp_path):
    params = load_params(write(tmp_path, {"prepare_data": {"margin": 0}}))
    assert params.prepare_data.margin == 0.0 and isinstance(params.prepare_data.margin, float)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(FileNotFoundError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)


def test_roundtrip_and_frozen():
    params = load_params(ROOT / "params.yaml")
    again = from_dict(Params, to_dict(params))
    assert again == params
    with pytest.raises(AttributeError):
        params.seed = 3  # type: ignore[misc]


def test_section_view_restricts_access(tmp_path):
    view = load_params(ROOT / "params.yaml", sections=("seed",))
    assert view.seed == 0
    with pytest.raises(AttributeError, match="not declared by this stage"):
        _ = view.prepare_data
    assert view.to_dict() == {"seed": 0}


def test_committed_schema_is_generated_from_dataclasses():
    committed = (ROOT / "workflow/schemas/params.schema.yaml").read_text()
    assert committed == dump_schema_yaml(), "run `make schema`"


def test_schema_rejects_what_the_loader_rejects(tmp_path):
    import jsonschema

    schema = yaml.safe_load(dump_schema_yaml())
    jsonschema.validate(yaml.safe_load((ROOT / "params.yaml").read_text()), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"prepare_data": {"image_sise": 3}}, schema)
