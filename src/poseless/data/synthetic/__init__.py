"""The embedded synthetic dataset: procedural categories rendered by an exact ray caster.

Public API (used by the ``prepare_data`` stage)::

    CATEGORIES                                  names of the procedural categories
    make_shape(category, rng) -> SyntheticShape watertight, part-labelled, normalised mesh
    render_view(shape, R, t, fov_deg, size)     ray-cast rgb, mask, normals, depth
    iter_items(cfg, seed) -> Iterator[RawItem]  the whole collection with exact ground truth
"""

from .generate import check_config, instance_items, iter_items, sample_azimuths, sample_elevations
from .raycast import ViewRender, render_view, sample_surface, voxelize_filled
from .shapes import CATEGORIES, PART_NAMES, SHAPE_PARAM_DIM, SyntheticShape, make_shape

__all__ = [
    "CATEGORIES",
    "PART_NAMES",
    "SHAPE_PARAM_DIM",
    "SyntheticShape",
    "ViewRender",
    "check_config",
    "instance_items",
    "iter_items",
    "make_shape",
    "render_view",
    "sample_azimuths",
    "sample_elevations",
    "sample_surface",
    "voxelize_filled",
]
