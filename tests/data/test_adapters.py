"""The adapter registry: config names == implemented adapters; wiring of each adapter."""

import typing

import numpy as np
import pytest
import yaml
from PIL import Image

from poseless.config import (
    ConfigError,
    FolderConfig,
    PrepareDataConfig,
    SyntheticConfig,
    load_params,
)
from poseless.data.adapters import ADAPTERS, create_adapter, get_adapter
from poseless.data.raw import RawItem

TINY_SYNTHETIC = SyntheticConfig(
    categories=("chair",),
    instances_per_category=2,
    render_size=16,
    voxel_resolution=4,
    n_surface_points=8,
    workers=1,
)


def test_config_accepts_exactly_the_registered_adapters(tmp_path):
    hint = typing.get_type_hints(PrepareDataConfig)["adapter"]
    assert set(typing.get_args(hint)) == set(ADAPTERS)
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump({"prepare_data": {"adapter": "imagenet"}}))
    with pytest.raises(
        ConfigError, match=r"prepare_data\.adapter: 'imagenet' is not one of"
    ) as info:
        load_params(p)
    assert all(repr(name) in str(info.value) for name in ADAPTERS)
    with pytest.raises(ValueError, match=r"unknown adapter 'imagenet' \(known: synthetic, folder"):
        get_adapter("imagenet")


def test_config_validation_of_prepare_data(tmp_path):
    p = tmp_path / "params.yaml"
    for data, match in [
        ({"adapter": "folder"}, r"prepare_data: folder\.root: must be set"),
        ({"image_size": 4}, r"prepare_data: image_size: must be at least 8"),
        ({"margin": -0.1}, r"margin: must be >= 0"),
        ({"background": [1, 2, 0]}, r"background: RGB values must lie in \[0, 1\]"),
        (
            {"folder": {"split_fractions": [0.5, 0.2, 0.2]}},
            r"prepare_data\.folder: split_fractions: must be non-negative and sum to 1",
        ),
    ]:
        p.write_text(yaml.safe_dump({"prepare_data": data}))
        with pytest.raises(ConfigError, match=match):
            load_params(p)


def test_folder_adapter(tmp_path):
    a = np.zeros((16, 16, 4), np.uint8)
    a[4:12, 4:12] = 255
    Image.fromarray(a, "RGBA").save(tmp_path / "x.png")
    cfg = PrepareDataConfig(
        adapter="folder", folder=FolderConfig(root=str(tmp_path), split_fractions=(0.0, 1.0, 0.0))
    )
    (item,) = list(create_adapter(cfg, seed=0))
    assert isinstance(item, RawItem) and item.id == "x"
    spec = ADAPTERS["folder"]
    assert spec.camera(cfg) is None and spec.total(cfg) is None
    assert spec.split_fractions(cfg) == (0.0, 1.0, 0.0)


def test_synthetic_adapter_uses_the_generator():
    cfg = PrepareDataConfig(synthetic=TINY_SYNTHETIC)
    items = list(create_adapter(cfg, seed=3))
    spec = ADAPTERS["synthetic"]
    assert len(items) == spec.total(cfg) == 2
    assert all(isinstance(i, RawItem) and i.split in ("train", "val", "test") for i in items)
    assert items[0].rgb.shape == (16, 16, 3) and items[0].gt["normals"].shape == (3, 16, 16)
    assert spec.camera(cfg) == {"fov_deg": 30.0, "distance": 2.732}


def test_synthetic_config_errors_are_config_errors():
    cfg = PrepareDataConfig(synthetic=SyntheticConfig(categories=("teapot_of_doom",)))
    with pytest.raises(ConfigError, match=r"prepare_data\.synthetic\.categories"):
        create_adapter(cfg, seed=0)
