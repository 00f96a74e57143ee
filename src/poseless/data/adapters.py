"""Registry of the adapters that turn a raw collection into :class:`RawItem` s.

``prepare_data.adapter`` picks one by name; the names accepted by the config
(``PrepareDataConfig.adapter``) are exactly the keys of :data:`ADAPTERS`, so an
unknown or not yet implemented adapter fails at config load with the list of
known ones. An adapter yields :class:`RawItem` s, and :class:`Rejected` entries
for inputs it could not turn into an item (unreadable file, missing mask, ...);
``prepare_data`` applies the ``on_bad_item`` policy to both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from poseless.config import ConfigError, PrepareDataConfig
from poseless.data.raw import RawItem


@dataclass(frozen=True)
class Rejected:
    """An input an adapter (or prepare_data) could not use."""

    id: str
    """Id the item would have had ('' when none could be derived)."""
    source: str
    """The offending file (or generator seed)."""
    reason: str
    """What is wrong with it, in words."""


@dataclass(frozen=True)
class Adapter:
    """One adapter: how to iterate a collection and what it knows about the camera."""

    items: Callable[[PrepareDataConfig, int], Iterator[RawItem | Rejected]]
    """(cfg, seed) -> raw items (and rejected inputs), in a deterministic order."""
    split_fractions: Callable[[PrepareDataConfig], tuple[float, float, float]]
    """Train / val / test fractions for items that come without a split."""
    camera: Callable[[PrepareDataConfig], dict | None]
    """{fov_deg, distance} of the raw frames when known, else None."""
    total: Callable[[PrepareDataConfig], int | None]
    """Number of items it will yield when known in advance (progress bar), else None."""


def _synthetic_items(cfg: PrepareDataConfig, seed: int) -> Iterator[RawItem]:
    from poseless.data.synthetic import check_config, iter_items  # heavy: import on use

    try:
        check_config(cfg.synthetic)  # now, not at the first item, and as a config error
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return iter_items(cfg.synthetic, seed)


def _folder_items(cfg: PrepareDataConfig, seed: int) -> Iterator[RawItem | Rejected]:
    from poseless.data.folder import iter_folder

    return iter_folder(cfg.folder)


def _real(name: str):
    """The module of a real-dataset adapter (imported on use: trimesh, scipy.io)."""
    import importlib

    return importlib.import_module(f"poseless.data.{name}")


ADAPTERS: dict[str, Adapter] = {
    "synthetic": Adapter(
        items=_synthetic_items,
        split_fractions=lambda cfg: cfg.synthetic.split_fractions,
        camera=lambda cfg: {"fov_deg": cfg.synthetic.fov_deg, "distance": cfg.synthetic.distance},
        total=lambda cfg: (
            len(cfg.synthetic.categories)
            * cfg.synthetic.instances_per_category
            * cfg.synthetic.views_per_instance
        ),
    ),
    "folder": Adapter(
        items=_folder_items,
        split_fractions=lambda cfg: cfg.folder.split_fractions,
        camera=lambda cfg: None,
        total=lambda cfg: None,
    ),
    "shapenet_nmr": Adapter(
        items=lambda cfg, seed: _real("shapenet_nmr").iter_items(cfg.shapenet_nmr, seed),
        split_fractions=lambda cfg: (0.8, 0.1, 0.1),  # unused: items keep their published split
        camera=lambda cfg: {"fov_deg": 30.0, "distance": 2.732},
        total=lambda cfg: None,
    ),
    "pix3d": Adapter(
        items=lambda cfg, seed: _real("pix3d").iter_items(cfg.pix3d, seed),
        split_fractions=lambda cfg: cfg.pix3d.split_fractions,
        camera=lambda cfg: None,
        total=lambda cfg: None,
    ),
    "cub": Adapter(
        items=lambda cfg, seed: _real("cub").iter_items(cfg.cub, seed),
        split_fractions=lambda cfg: (0.8, 0.1, 0.1),  # unused: items come with their split
        camera=lambda cfg: None,
        total=lambda cfg: None,
    ),
    "pascal3d": Adapter(
        items=lambda cfg, seed: _real("pascal3d").iter_items(cfg.pascal3d, seed),
        split_fractions=lambda cfg: cfg.pascal3d.split_fractions,
        camera=lambda cfg: None,
        total=lambda cfg: None,
    ),
}
"""Adapters by name (the values ``prepare_data.adapter`` accepts)."""


def get_adapter(name: str) -> Adapter:
    """The adapter called ``name``; raises ValueError listing the known ones."""
    try:
        return ADAPTERS[name]
    except KeyError:
        raise ValueError(f"unknown adapter {name!r} (known: {', '.join(ADAPTERS)})") from None


def create_adapter(cfg: PrepareDataConfig, seed: int) -> Iterator[RawItem | Rejected]:
    """Iterator over the raw items of the collection ``cfg.adapter`` names."""
    return get_adapter(cfg.adapter).items(cfg, seed)
