"""Typed, strict configuration: one frozen dataclass per ``params.yaml`` section.

``load_params(path)`` reads a YAML file and builds :class:`Params`. Unknown keys,
missing required keys and wrong types fail at load with the dotted key name and
the file, e.g. ``params.yaml: prepare_data.synthetic.categroies: unknown key``.

Stage scripts ask only for the sections they declare (``sections=...``); the
workflow and ``dvc.yaml`` use the same list, so a stage reruns exactly when one
of its sections changes.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A params file does not match the schema."""


# ---------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AzimuthConfig:
    """How the synthetic renderer draws each view's azimuth."""

    mode: Literal["uniform", "discrete"] = "uniform"
    """uniform: U[0, 360); discrete: one of ``values_deg`` with ``weights``."""
    values_deg: tuple[float, ...] = ()
    """Allowed azimuths in degrees (discrete mode), e.g. URA's sparse subsets."""
    weights: tuple[float, ...] = ()
    """Relative probabilities of ``values_deg`` (empty: equal)."""
    jitter_deg: float = 0.0
    """Uniform jitter (+/- degrees) added to discrete azimuths."""


@dataclass(frozen=True)
class ElevationConfig:
    """How the synthetic renderer draws each view's elevation."""

    mode: Literal["fixed", "uniform"] = "fixed"
    """fixed: ``value_deg``; uniform: U[range_deg[0], range_deg[1]]."""
    value_deg: float = 30.0
    """Elevation in degrees (fixed mode)."""
    range_deg: tuple[float, float] = (20.0, 40.0)
    """Elevation range in degrees (uniform mode)."""


@dataclass(frozen=True)
class SyntheticConfig:
    """The embedded, procedurally generated dataset (exact ground truth)."""

    categories: tuple[str, ...] = ("chair", "airplane")
    """Categories to generate, from ``poseless.data.synthetic.CATEGORIES``."""
    instances_per_category: int = 200
    """Shape instances per category (each with its own view(s))."""
    views_per_instance: int = 1
    """Views rendered per instance (1 = a single-view collection)."""
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    """Train / val / test fractions of instances (split by instance)."""
    azimuth: AzimuthConfig = field(default_factory=AzimuthConfig)
    """Azimuth distribution of the views."""
    elevation: ElevationConfig = field(default_factory=ElevationConfig)
    """Elevation distribution of the views."""
    distance: float = 2.732
    """Camera distance from the origin (Kato)."""
    fov_deg: float = 30.0
    """Full field of view in degrees (Kato)."""
    render_size: int = 64
    """Rendered image side in pixels."""
    voxel_resolution: int = 32
    """Ground-truth filled voxel grid resolution."""
    n_surface_points: int = 10000
    """Ground-truth surface points per instance."""
    workers: int = 2
    """Processes used to generate and render."""


@dataclass(frozen=True)
class FolderConfig:
    """A folder of RGBA PNGs, or image + mask pairs matched by name."""

    root: str = ""
    """Folder with the images (searched recursively)."""
    mask_suffix: str = "_mask"
    """``name<mask_suffix>.png`` is the mask of ``name.<ext>`` (image + mask pairs)."""
    mask_dir: str = ""
    """Optional separate folder of masks with the images' stems as names."""
    category: str = ""
    """Category of every item (empty: the image's parent folder name)."""
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    """Train / val / test fractions (deterministic by id hash)."""


@dataclass(frozen=True)
class PrepareDataConfig:
    """Stage ``prepare_data``: raw collection -> one prepared format."""

    adapter: Literal["synthetic", "folder", "shapenet_nmr", "pix3d", "cub", "pascal3d"] = (
        "synthetic"
    )
    """Which adapter reads the raw data."""
    image_size: int = 64
    """Side of the prepared square images."""
    crop: Literal["bbox", "none"] = "bbox"
    """bbox: square crop around the mask's bounding box; none: keep the frame
    (needed when the camera model must stay exact, e.g. the synthetic data)."""
    margin: float = 0.1
    """Margin around the bounding box, as a fraction of its longer side."""
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """RGB in [0, 1] the object is composited on."""
    on_bad_item: Literal["error", "skip"] = "error"
    """error: stop naming the file and the problem; skip: drop it into rejected.csv."""
    contact_sheet_items: int = 32
    """Items shown in the contact sheet."""
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    """Settings of the ``synthetic`` adapter."""
    folder: FolderConfig = field(default_factory=FolderConfig)
    """Settings of the ``folder`` adapter."""


@dataclass(frozen=True)
class Params:
    """All sections of a params file. Sections are added by the stages that use them."""

    seed: int = 0
    """Global seed; every stage derives its generators from it."""
    prepare_data: PrepareDataConfig = field(default_factory=PrepareDataConfig)
    """Stage ``prepare_data``."""


# ---------------------------------------------------------------------------
# Strict construction from plain data
# ---------------------------------------------------------------------------


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _build(tp, value, key: str):
    """Build a value of type ``tp`` from YAML data, strictly."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping for {tp.__name__}, got {value!r}")
        return _build_dataclass(tp, value, key)
    if tp is Any:
        return value
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {list(args)}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _build(arg, value, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{key}: {value!r} matches none of {_type_name(tp)} ({'; '.join(errors)})")
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_build(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key}: expected {len(args)} items, got {len(value)}")
        return tuple(_build(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        k_tp, v_tp = args
        return types.MappingProxyType(
            {_build(k_tp, k, key): _build(v_tp, v, f"{key}.{k}") for k, v in value.items()}
        )
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {tp!r}")  # a schema bug, not a user error


def _build_dataclass(cls, data: Mapping, prefix: str):
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(
            f"{where}{unknown[0]}: unknown key (known keys here: {', '.join(sorted(fields))})"
        )
    kwargs = {}
    for name, f in fields.items():
        key = f"{prefix}.{name}" if prefix else name
        if name in data:
            kwargs[name] = _build(hints[name], data[name], key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{key}: required key is missing")
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if check is not None:
        try:
            check()
        except ValueError as exc:
            raise ConfigError(f"{prefix or '<top>'}: {exc}") from exc
    return obj


def from_dict(cls, data: Mapping | None, prefix: str = ""):
    """Build dataclass ``cls`` from a mapping, strictly (unknown keys are errors)."""
    return _build_dataclass(cls, data or {}, prefix)


def to_dict(obj) -> Any:
    """Dataclass (possibly nested) -> plain YAML/JSON-able data."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, tuple | list):
        return [to_dict(v) for v in obj]
    return obj


class SectionView:
    """A :class:`Params` restricted to the sections a stage declared."""

    def __init__(self, params: Params, sections: tuple[str, ...], source: str):
        self._params = params
        self._sections = sections
        self._source = source

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        if name not in self._sections:
            raise AttributeError(
                f"section {name!r} was not declared by this stage (declared: {self._sections}); "
                "add it to the stage's PARAMS so that the workflow reruns it when it changes"
            )
        return getattr(self._params, name)

    def to_dict(self) -> dict:
        """The declared sections as plain data (what artifact folders record)."""
        return {s: to_dict(getattr(self._params, s)) for s in self._sections}


def load_params(path: str | Path, sections: tuple[str, ...] | list[str] | None = None):
    """Load and validate a params file.

    Args:
        path: YAML file (``params.yaml`` or a file from ``config/``).
        sections: if given, return a view restricted to these top-level sections.
    Raises:
        ConfigError: naming the file and the dotted key.
        FileNotFoundError: when the file is missing.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: params file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    try:
        params = from_dict(Params, data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if sections is None:
        return params
    unknown = [s for s in sections if s not in {f.name for f in dataclasses.fields(Params)}]
    if unknown:
        raise ConfigError(f"unknown sections requested: {unknown}")
    return SectionView(params, tuple(sections), str(path))


# ---------------------------------------------------------------------------
# JSON schema (used by the Snakefile's validate(); generated, never hand-edited)
# ---------------------------------------------------------------------------


def _schema_for(tp) -> dict:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        props = {}
        required = []
        for f in dataclasses.fields(tp):
            props[f.name] = _schema_for(hints[f.name])
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                required.append(f.name)
        out = {"type": "object", "properties": props, "additionalProperties": False}
        if tp.__doc__:
            out["description"] = " ".join(tp.__doc__.split())
        if required:
            out["required"] = required
        return out
    if origin is Literal:
        return {"enum": list(args)}
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [_schema_for(a) for a in args]}
    if tp is type(None):
        return {"type": "null"}
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return {"type": "array", "items": _schema_for(args[0])}
        return {
            "type": "array",
            "prefixItems": [_schema_for(a) for a in args],
            "minItems": len(args),
            "maxItems": len(args),
        }
    if origin is dict:
        return {"type": "object", "additionalProperties": _schema_for(args[1])}
    if tp is Any:
        return {}
    return {
        bool: {"type": "boolean"},
        int: {"type": "integer"},
        float: {"type": "number"},
        str: {"type": "string"},
    }[tp]


def json_schema() -> dict:
    """JSON schema of a params file, generated from :class:`Params`."""
    schema = _schema_for(Params)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Poseless params"
    return schema


def dump_schema_yaml() -> str:
    """The schema as the YAML text committed in workflow/schemas/params.schema.yaml."""
    header = (
        "# Generated by `python -m poseless.config` from src/poseless/config.py; do not edit.\n"
    )
    return header + yaml.safe_dump(json.loads(json.dumps(json_schema())), sort_keys=False)


if __name__ == "__main__":  # pragma: no cover - used by `make schema`
    print(dump_schema_yaml(), end="")
