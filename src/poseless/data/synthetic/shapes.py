"""Procedural shape categories: watertight part-labelled meshes with real intra-class variation.

Every generator draws its parameters from a ``numpy.random.Generator`` in a fixed order
(the same number of draws whatever the variant), builds named parts from convex hulls,
boxes and cylinders, joins them with exact boolean unions/differences (manifold3d), and
returns a :class:`SyntheticShape`:

* the mesh is watertight, centred (bbox centre at the origin) and normalised so that its
  longest bbox side is 1, i.e. it fits in [-0.5, 0.5]^3;
* canonical orientation per category: up = +y, the category's front faces -z (towards
  the azimuth-0 camera of ``poseless.geometry.cameras``). Backs of chairs and sofas are
  at +z, airplane noses at -z, car hoods and headlights at -z, mug handles at +x, desk
  lamps reach towards -z;
* ``face_parts`` labels every triangle with a part index into ``part_names`` and
  ``part_colors`` (per-instance colour variation);
* ``shape_params`` is a fixed-length float32 vector (length :data:`SHAPE_PARAM_DIM` for
  every category): a one-hot category block followed by :data:`PARAM_SLOTS` generator
  parameters, zero-padded. It feeds the "oracle" shape embedding.

Vertex and face order are canonicalised (vertices sorted lexicographically, faces sorted by
part and indices), so the arrays depend only on the geometry, not on manifold3d's global
mesh-id counter or on the process that built them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import manifold3d as m3d
import numpy as np
import trimesh

CATEGORIES: tuple[str, ...] = ("chair", "table", "airplane", "car", "mug", "lamp", "sofa")
"""Names of the procedural categories, in their fixed index order."""

PARAM_SLOTS = 28
"""Generator parameters per shape (zero-padded) after the one-hot category block."""

SHAPE_PARAM_DIM = len(CATEGORIES) + PARAM_SLOTS
"""Length D of ``SyntheticShape.shape_params``, the same for every category."""

PART_NAMES: dict[str, tuple[str, ...]] = {
    "chair": ("seat", "back", "base", "arms"),
    "table": ("top", "legs", "apron"),
    "airplane": ("fuselage", "wings", "tail", "engines"),
    "car": ("body", "cabin", "wheels", "headlights", "taillights"),
    "mug": ("body", "handle", "interior"),
    "lamp": ("base", "stem", "shade", "bulb"),
    "sofa": ("frame", "back", "arms", "cushions", "legs"),
}
"""Part names of each category; ``face_parts`` indexes into these."""


@dataclass(frozen=True)
class SyntheticShape:
    """One generated shape instance."""

    mesh: trimesh.Trimesh
    """Watertight mesh, vertices (V, 3) float64 in [-0.5, 0.5]^3, faces (F, 3) int64."""
    face_parts: np.ndarray
    """(F,) int32 part index of every face (into ``part_names``)."""
    part_colors: np.ndarray
    """(P, 3) float32 RGB in [0, 1] of each part."""
    part_names: tuple[str, ...]
    """(P,) part names."""
    shape_params: np.ndarray
    """(D,) float32: one-hot category (len(CATEGORIES)) then generator parameters."""
    category: str
    """Category name (one of CATEGORIES)."""


# ---------------------------------------------------------------------------
# Primitives (all return manifold3d.Manifold in generator units)
# ---------------------------------------------------------------------------


def _box(x0: float, x1: float, y0: float, y1: float, z0: float, z1: float) -> m3d.Manifold:
    """Axis-aligned box [x0, x1] x [y0, y1] x [z0, z1]."""
    size = (x1 - x0, y1 - y0, z1 - z0)
    if min(size) <= 0:
        raise ValueError(f"_box: empty box {size}")
    return m3d.Manifold.cube(size).translate((x0, y0, z0))


def _hull(points) -> m3d.Manifold:
    """Convex hull of (N, 3) points."""
    return m3d.Manifold.hull_points(np.asarray(points, dtype=np.float64))


def _ring(center, radius: float, axis: int, segments: int, radius2: float | None = None):
    """(segments, 3) points on a circle/ellipse around ``center`` normal to world ``axis``."""
    theta = 2.0 * np.pi * (np.arange(segments) + 0.5) / segments
    a, b = [k for k in range(3) if k != axis]
    pts = np.tile(np.asarray(center, dtype=np.float64), (segments, 1))
    pts[:, a] += radius * np.cos(theta)
    pts[:, b] += (radius if radius2 is None else radius2) * np.sin(theta)
    return pts


def _post(p0, p1, radius: float, round_: bool = True, segments: int = 12) -> m3d.Manifold:
    """Near-vertical post between p0 and p1: hull of two horizontal rings (or squares)."""
    seg, r = (segments, radius) if round_ else (4, radius * math.sqrt(2.0))
    return _hull(np.concatenate([_ring(p0, r, 1, seg), _ring(p1, r, 1, seg)]))


def _rod(p0, p1, radius: float, segments: int = 12) -> m3d.Manifold:
    """Round rod of any direction from p0 to p1 (hull of two perpendicular rings)."""
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    axis = p1 - p0
    axis /= np.linalg.norm(axis)
    helper = np.eye(3)[int(np.argmin(np.abs(axis)))]
    u = np.cross(axis, helper)
    u /= np.linalg.norm(u)
    v = np.cross(axis, u)
    theta = 2.0 * np.pi * (np.arange(segments) + 0.5) / segments
    ring = radius * (np.cos(theta)[:, None] * u + np.sin(theta)[:, None] * v)
    return _hull(np.concatenate([p0 + ring, p1 + ring]))


def _cyl_y(
    r0: float, r1: float, y0: float, y1: float, x: float = 0.0, z: float = 0.0, seg: int = 32
) -> m3d.Manifold:
    """Cylinder/frustum along +y from (x, y0, z) radius r0 to (x, y1, z) radius r1."""
    c = m3d.Manifold.cylinder(y1 - y0, r0, r1, seg, False).rotate((-90.0, 0.0, 0.0))
    return c.translate((x, y0, z))


def _cyl_x(r: float, x0: float, x1: float, y: float, z: float, seg: int = 20) -> m3d.Manifold:
    """Cylinder along +x from x0 to x1 centred on (y, z)."""
    c = m3d.Manifold.cylinder(x1 - x0, r, -1.0, seg, False).rotate((0.0, 90.0, 0.0))
    return c.translate((x0, y, z))


def _union(items: list[m3d.Manifold]) -> m3d.Manifold:
    items = [s for s in items if not s.is_empty()]
    if not items:
        return m3d.Manifold()
    return m3d.Manifold.batch_boolean(items, m3d.OpType.Add)


class _Builder:
    """Named parts (each a union of solids) plus global cuts; tracks which part made each face."""

    def __init__(self, part_names: tuple[str, ...]):
        self.part_names = part_names
        self.solids: dict[str, list[m3d.Manifold]] = {p: [] for p in part_names}
        self.cuts: list[tuple[str, m3d.Manifold]] = []

    def add(self, part: str, *solids: m3d.Manifold) -> None:
        self.solids[part].extend(solids)

    def cut(self, part: str, solid: m3d.Manifold) -> None:
        """Subtract ``solid`` from the whole shape; the new faces belong to ``part``."""
        self.cuts.append((part, solid))

    def build(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Returns vertices (V, 3) float64, faces (F, 3) int64, face_parts (F,) int32."""
        id_to_part: dict[int, int] = {}
        solids = []
        for k, name in enumerate(self.part_names):
            u = _union(self.solids[name])
            if u.is_empty():
                continue
            u = u.as_original()
            id_to_part[u.original_id()] = k
            solids.append(u)
        shape = _union(solids)
        for name, solid in self.cuts:
            solid = solid.as_original()
            id_to_part[solid.original_id()] = self.part_names.index(name)
            shape = shape - solid
        if shape.status() != m3d.Error.NoError or shape.is_empty():
            raise RuntimeError(f"manifold boolean failed: {shape.status()}")
        mesh = shape.to_mesh64()
        verts = np.asarray(mesh.vert_properties, dtype=np.float64)[:, :3]
        faces = np.asarray(mesh.tri_verts, dtype=np.int64)
        parts = np.empty(len(faces), dtype=np.int32)
        run_index = np.asarray(mesh.run_index, dtype=np.int64) // 3
        for r, oid in enumerate(mesh.run_original_id):
            parts[run_index[r] : run_index[r + 1]] = id_to_part[int(oid)]
        return verts, faces, parts


def _normalise_and_canonicalise(verts, faces, parts):
    """Centre the bbox at the origin, scale the longest side to 1, sort vertices and faces."""
    lo, hi = verts.min(0), verts.max(0)
    verts = (verts - (lo + hi) / 2.0) / float((hi - lo).max())
    order = np.lexsort((verts[:, 2], verts[:, 1], verts[:, 0]))
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    verts = verts[order]
    faces = inverse[faces]
    # rotate each face so its smallest index comes first (winding kept)
    shift = np.argmin(faces, axis=1)
    idx = (shift[:, None] + np.arange(3)[None]) % 3
    faces = np.take_along_axis(faces, idx, axis=1)
    forder = np.lexsort((faces[:, 2], faces[:, 1], faces[:, 0], parts))
    return verts, faces[forder], parts[forder]


# ---------------------------------------------------------------------------
# Colours
# ---------------------------------------------------------------------------

_WOOD = ((0.55, 0.35, 0.20), (0.72, 0.52, 0.32), (0.38, 0.24, 0.14), (0.85, 0.72, 0.52))
_METAL = ((0.62, 0.62, 0.65), (0.22, 0.22, 0.24), (0.80, 0.78, 0.72))
_FABRIC = (
    (0.72, 0.16, 0.15),
    (0.16, 0.30, 0.62),
    (0.22, 0.50, 0.30),
    (0.86, 0.80, 0.68),
    (0.32, 0.32, 0.34),
    (0.55, 0.40, 0.60),
    (0.90, 0.62, 0.20),
)
_PAINT = (
    (0.92, 0.92, 0.92),
    (0.80, 0.12, 0.10),
    (0.12, 0.25, 0.65),
    (0.15, 0.15, 0.17),
    (0.60, 0.62, 0.66),
    (0.95, 0.75, 0.15),
    (0.20, 0.55, 0.35),
)
_GLASS = ((0.18, 0.24, 0.32), (0.30, 0.38, 0.45))
_RUBBER = ((0.08, 0.08, 0.08), (0.15, 0.15, 0.16))
_LIGHT = ((0.98, 0.95, 0.80),)
_RED_LIGHT = ((0.85, 0.08, 0.06),)

# per category: one palette per part, or the index of an earlier part to copy (with jitter)
_COLOURS: dict[str, tuple] = {
    "chair": (_FABRIC + _WOOD, 0, _WOOD + _METAL, 2),
    "table": (_WOOD + _PAINT, _WOOD + _METAL, 0),
    "airplane": (_PAINT, 0, 0, _METAL),
    "car": (_PAINT, _GLASS, _RUBBER, _LIGHT, _RED_LIGHT),
    "mug": (_PAINT + _FABRIC, 0, ((0.95, 0.95, 0.93),) + _PAINT),
    "lamp": (_METAL + _WOOD + _PAINT, _METAL, _FABRIC + _PAINT, _LIGHT),
    "sofa": (_FABRIC, 0, 0, 0, _WOOD + _METAL),
}


def _pick_colours(category: str, rng: np.random.Generator) -> np.ndarray:
    """(P, 3) float32 part colours: palette choice + multiplicative jitter per instance."""
    spec = _COLOURS[category]
    out = np.zeros((len(spec), 3))
    for k, s in enumerate(spec):
        keep_prev = isinstance(s, int)
        choice = rng.integers(len(spec[s] if keep_prev else s))
        different = rng.random() < 0.3
        jitter = rng.uniform(0.85, 1.15, size=3)
        if keep_prev and not different:
            base = out[s]
        else:
            palette = spec[s] if keep_prev else s
            base = np.asarray(palette[choice])
        out[k] = base * jitter
    return np.clip(out, 0.03, 1.0).astype(np.float32)


# ---------------------------------------------------------------------------
# Parameter recording
# ---------------------------------------------------------------------------


class _Params:
    """Draws and records generator parameters in a fixed order."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.values: list[float] = []

    def u(self, lo: float, hi: float) -> float:
        v = float(self.rng.uniform(lo, hi))
        self.values.append(v)
        return v

    def i(self, lo: int, hi: int) -> int:
        """Integer in [lo, hi)."""
        v = int(self.rng.integers(lo, hi))
        self.values.append(float(v))
        return v

    def b(self, p: float) -> bool:
        v = bool(self.rng.random() < p)
        self.values.append(float(v))
        return v


# ---------------------------------------------------------------------------
# Categories
# ---------------------------------------------------------------------------


def _tilted_box(x0, x1, y0, y1, z0, z1, yref: float, tan_tilt: float) -> m3d.Manifold:
    """Box whose z shifts by (y - yref) * tan_tilt (a backwards-leaning slab)."""
    pts = [(x, y, z + (y - yref) * tan_tilt) for x in (x0, x1) for y in (y0, y1) for z in (z0, z1)]
    return _hull(pts)


def _chair(p: _Params, b: _Builder) -> None:
    w, d = p.u(0.42, 0.62), p.u(0.40, 0.56)
    st, sh = p.u(0.03, 0.08), p.u(0.38, 0.50)
    bh, bt = p.u(0.30, 0.60), p.u(0.025, 0.06)
    tilt = math.tan(math.radians(p.u(0.0, 16.0)))
    back_style, n_slats = p.i(0, 3), p.i(2, 6)
    base_style = p.i(0, 3)
    leg_t, leg_round, splay = p.u(0.018, 0.045), p.b(0.5), p.u(0.0, 0.05)
    arms, arm_h, arm_w = p.b(0.4), p.u(0.16, 0.26), p.u(0.03, 0.07)
    n_spokes, base_r = p.i(4, 6), p.u(0.22, 0.32)
    runner_r = p.u(0.010, 0.02)

    y0 = sh - st
    b.add("seat", _box(-w / 2, w / 2, y0, sh, -d / 2, d / 2))
    # back rest at +z, leaning backwards
    y1 = sh + bh
    zb0, zb1 = d / 2 - bt, d / 2
    if back_style == 0:
        b.add("back", _tilted_box(-w / 2, w / 2, y0, y1, zb0, zb1, y0, tilt))
    else:
        pw = max(bt, 0.03)
        rail = 0.04 + 0.1 * bh
        for s in (-1, 1):
            x_out = s * w / 2
            x_in = s * (w / 2 - pw)
            b.add(
                "back", _tilted_box(min(x_out, x_in), max(x_out, x_in), y0, y1, zb0, zb1, y0, tilt)
            )
        b.add("back", _tilted_box(-w / 2, w / 2, y1 - rail, y1, zb0, zb1, y0, tilt))
        zs0, zs1 = zb0 + 0.2 * bt, zb1 - 0.2 * bt
        inner = w - 2 * pw
        if back_style == 1:  # vertical slats
            sw = inner / (2 * n_slats + 1)
            for k in range(n_slats):
                xa = -inner / 2 + (2 * k + 1) * sw
                b.add(
                    "back",
                    _tilted_box(xa, xa + sw, sh - 0.01, y1 - rail + 0.01, zs0, zs1, y0, tilt),
                )
        else:  # horizontal rails
            span = (y1 - rail) - sh
            rh = span / (2 * n_slats + 1)
            for k in range(n_slats):
                ya = sh + (2 * k + 1) * rh
                b.add(
                    "back",
                    _tilted_box(-w / 2 + 0.01, w / 2 - 0.01, ya, ya + rh, zs0, zs1, y0, tilt),
                )
    # base
    top = y0 + 0.005
    if base_style == 0:  # four legs
        for sx in (-1, 1):
            for sz in (-1, 1):
                x, z = sx * (w / 2 - leg_t), sz * (d / 2 - leg_t)
                b.add(
                    "base",
                    _post((x + sx * splay, 0.0, z + sz * splay), (x, top, z), leg_t, leg_round),
                )
    elif base_style == 1:  # pedestal with spokes and casters
        col_r = 0.02 + 0.5 * leg_t
        b.add("base", _cyl_y(col_r, col_r, 0.05, top, seg=16))
        b.add("base", _cyl_y(col_r * 1.6, col_r * 1.3, 0.03, 0.10, seg=16))
        for k in range(n_spokes):
            a = -math.pi / 2 + 2 * math.pi * k / n_spokes
            end = (base_r * math.cos(a), 0.04, base_r * math.sin(a))
            b.add("base", _rod((0.0, 0.06, 0.0), end, 0.018, 8))
            b.add("base", m3d.Manifold.sphere(0.025, 12).translate((end[0], 0.025, end[2])))
    else:  # sled: two runners along z with front and back posts
        ext = 0.04
        for s in (-1, 1):
            x = s * (w / 2 - runner_r - 0.01)
            zf, zr = -d / 2 + 0.04, d / 2 - 0.04
            b.add("base", _rod((x, runner_r, -d / 2 - ext), (x, runner_r, d / 2 + ext), runner_r))
            b.add("base", _rod((x, runner_r, zf), (x, top, zf), runner_r))
            b.add("base", _rod((x, runner_r, zr), (x, top, zr), runner_r))
    if arms:
        ya = sh + arm_h
        for s in (-1, 1):
            xo, xi = s * (w / 2 + 0.01), s * (w / 2 - arm_w + 0.01)
            zback = zb0 + (ya - y0) * tilt + bt / 2
            b.add("arms", _box(min(xo, xi), max(xo, xi), ya - 0.03, ya, -d / 2 + 0.02, zback))
            xm = (xo + xi) / 2
            b.add(
                "arms",
                _post((xm, sh - 0.005, -d / 2 + 0.06), (xm, ya - 0.01, -d / 2 + 0.06), 0.015),
            )


def _table(p: _Params, b: _Builder) -> None:
    round_top = p.b(0.35)
    w, d, r = p.u(0.8, 1.6), p.u(0.5, 1.0), p.u(0.4, 0.7)
    tt, h = p.u(0.025, 0.06), p.u(0.45, 0.80)
    leg_style = p.i(0, 3)
    leg_t, leg_round, splay = p.u(0.025, 0.07), p.b(0.5), p.u(0.0, 0.06)
    apron, apron_h = p.b(0.5), p.u(0.05, 0.12)
    col_r, foot_r = p.u(0.04, 0.09), p.u(0.18, 0.35)
    if round_top:
        w = d = 2 * r
        b.add("top", _cyl_y(r, r, h - tt, h, seg=48))
    else:
        b.add("top", _box(-w / 2, w / 2, h - tt, h, -d / 2, d / 2))
    under = h - tt + 0.005
    inset = 0.12 * min(w, d) if round_top else leg_t + 0.02
    hx, hz = w / 2 - inset, d / 2 - inset
    if round_top:
        hx = hz = r * 0.62
    if leg_style == 0:
        for sx in (-1, 1):
            for sz in (-1, 1):
                x, z = sx * hx, sz * hz
                b.add(
                    "legs",
                    _post((x + sx * splay, 0.0, z + sz * splay), (x, under, z), leg_t, leg_round),
                )
    elif leg_style == 1:
        b.add("legs", _cyl_y(col_r, col_r, 0.02, under, seg=24))
        b.add("legs", _cyl_y(foot_r * min(w, d), foot_r * min(w, d) * 0.9, 0.0, 0.03, seg=32))
    else:  # trestle: two panels and a stretcher
        for s in (-1, 1):
            x = s * hx
            b.add("legs", _box(x - leg_t / 2, x + leg_t / 2, 0.0, under, -hz, hz))
        b.add("legs", _box(-hx, hx, 0.25 * h, 0.25 * h + 0.05, -0.03, 0.03))
    if apron:
        y0 = h - tt - apron_h
        if round_top:
            ring = _cyl_y(hx + 0.03, hx + 0.03, y0, h - tt + 0.005, seg=48)
            ring = ring - _cyl_y(hx, hx, y0 - 0.01, h, seg=48)
            b.add("apron", ring)
        else:
            ax, az = hx + leg_t / 2, hz + leg_t / 2
            for s in (-1, 1):
                b.add("apron", _box(-ax, ax, y0, under, s * az - 0.01, s * az + 0.01))
                b.add("apron", _box(s * ax - 0.01, s * ax + 0.01, y0, under, -az, az))


def _wing(root, tip, chord_root, chord_tip, t_root, t_tip, vertical: bool = False):
    """Tapered, swept lifting surface from leading-edge points root -> tip (hull of two airfoils)."""
    pts = []
    for le, c, t in ((root, chord_root, t_root), (tip, chord_tip, t_tip)):
        le = np.asarray(le, float)
        for frac, thick in ((0.0, 0.3), (0.3, 1.0), (1.0, 0.15)):
            for s in (-0.5, 0.5):
                q = le + np.array([0.0, 0.0, frac * c])
                q[0 if vertical else 1] += s * thick * t
                pts.append(q)
    return _hull(pts)


def _airplane(p: _Params, b: _Builder) -> None:
    rf, nose, tail = p.u(0.04, 0.08), p.u(0.10, 0.25), p.u(0.20, 0.35)
    tail_up = p.u(0.0, 0.6) * rf
    span, cr, taper = p.u(0.7, 1.2), p.u(0.12, 0.25), p.u(0.25, 0.7)
    sweep = math.tan(math.radians(p.u(0.0, 35.0)))
    wz, wy = p.u(-0.12, 0.08), p.u(-0.7, 0.7) * rf
    dihedral = math.tan(math.radians(p.u(-3.0, 8.0)))
    wt = p.u(0.012, 0.025)
    stab_span, stab_cr, fin_h, fin_cr = (
        p.u(0.2, 0.4),
        p.u(0.07, 0.14),
        p.u(0.10, 0.20),
        p.u(0.08, 0.16),
    )
    n_eng = (0, 2, 2, 4)[p.i(0, 4)]
    eng_r, eng_len = p.u(0.02, 0.035), p.u(0.08, 0.15)
    # fuselage along z, nose at -z
    rings = [
        _ring((0.0, -0.2 * rf, -0.5), 0.15 * rf, 2, 16),
        _ring((0.0, -0.05 * rf, -0.5 + 0.35 * nose), 0.75 * rf, 2, 16),
        _ring((0.0, 0.0, -0.5 + nose), rf, 2, 16),
        _ring((0.0, 0.0, 0.5 - tail), rf, 2, 16),
        _ring((0.0, tail_up, 0.5), 0.25 * rf, 2, 16),
    ]
    b.add("fuselage", _hull(np.concatenate(rings)))
    z_le = wz - cr / 2
    for s in (-1, 1):
        tip = (s * span / 2, wy + span / 2 * dihedral, z_le + span / 2 * sweep)
        b.add("wings", _wing((0.0, wy, z_le), tip, cr, cr * taper, wt, 0.6 * wt))
        sz = 0.5 - stab_cr - 0.02
        stip = (
            s * stab_span / 2,
            0.7 * tail_up + stab_span / 2 * dihedral,
            sz + stab_span / 2 * sweep,
        )
        b.add(
            "tail",
            _wing((0.0, 0.7 * tail_up, sz), stip, stab_cr, 0.5 * stab_cr, 0.8 * wt, 0.5 * wt),
        )
    fz = 0.5 - fin_cr - 0.01
    ftop = tail_up + 0.25 * rf + fin_h
    b.add(
        "tail",
        _wing(
            (0.0, 0.5 * tail_up, fz),
            (0.0, ftop, fz + fin_h * (sweep + 0.3)),
            fin_cr,
            0.6 * fin_cr,
            wt,
            0.6 * wt,
            vertical=True,
        ),
    )
    stations = {0: (), 2: (0.28,), 4: (0.22, 0.40)}[n_eng]
    for f in stations:
        for s in (-1, 1):
            x = s * f * span
            y_wing = wy + abs(x) * dihedral
            z0 = z_le + abs(x) * sweep - 0.4 * eng_len
            b.add(
                "engines",
                _rod(
                    (x, y_wing - eng_r * 0.9, z0),
                    (x, y_wing - eng_r * 0.9, z0 + eng_len),
                    eng_r,
                    16,
                ),
            )


def _car(p: _Params, b: _Builder) -> None:
    style = p.i(0, 3)  # 0 sedan, 1 hatchback, 2 SUV
    W, gc, hb = p.u(0.38, 0.50), p.u(0.03, 0.07), p.u(0.12, 0.20)
    hood, trunk = p.u(0.22, 0.35), p.u(0.12, 0.25)
    hc, ws, rs = p.u(0.10, 0.16), p.u(0.08, 0.18), p.u(0.04, 0.15)
    wr, ww = p.u(0.07, 0.10), p.u(0.05, 0.08)
    af, ar = p.u(0.15, 0.22), p.u(0.15, 0.22)
    fc, rc = p.u(0.05, 0.15), p.u(0.02, 0.08)
    if style == 1:
        trunk *= 0.2
    elif style == 2:
        hood, trunk, hc, wr, gc = 0.8 * hood, 0.25 * trunk, 1.4 * hc, 1.2 * wr, 1.5 * gc
    hx = W / 2
    body = []
    for x in (-hx, hx):
        body += [
            (x, gc, -0.48),
            (x, gc + 0.5 * hb, -0.5),
            (x, gc + hb, -0.5 + fc),
            (x, gc + hb, 0.5 - rc),
            (x, gc + 0.55 * hb, 0.5),
            (x, gc, 0.48),
        ]
    b.add("body", _hull(body))
    zc0, zc1 = -0.5 + hood, 0.5 - trunk
    top = gc + hb
    cabin = []
    for s in (-1, 1):
        cabin += [(s * 0.92 * hx, top - 0.01, zc0), (s * 0.92 * hx, top - 0.01, zc1)]
        cabin += [(s * 0.80 * hx, top + hc, zc0 + ws), (s * 0.80 * hx, top + hc, zc1 - rs)]
    b.add("cabin", _hull(cabin))
    for z in (-0.5 + af, 0.5 - ar):
        for s in (-1, 1):
            xo, xi = s * (hx + 0.015), s * (hx + 0.015 - ww)
            b.add("wheels", _cyl_x(wr, min(xo, xi), max(xo, xi), wr, z))
    ly = gc + 0.4 * hb
    for s in (-1, 1):
        xa, xb = sorted((s * 0.18 * W, s * 0.40 * W))
        b.add("headlights", _box(xa, xb, ly - 0.08 * hb, ly + 0.08 * hb, -0.515, -0.485))
        b.add("taillights", _box(xa, xb, ly - 0.06 * hb, ly + 0.06 * hb, 0.485, 0.515))


def _mug(p: _Params, b: _Builder) -> None:
    h = 1.0
    r, taper = p.u(0.28, 0.45), p.u(0.85, 1.15)
    wall, bottom = p.u(0.04, 0.08), p.u(0.05, 0.10)
    handle_style = p.i(0, 2)  # 0 round loop, 1 squared loop
    hR, hr, hy = p.u(0.22, 0.34), p.u(0.035, 0.06), p.u(0.45, 0.58)
    seg = 40
    r_top = r * taper
    b.add("body", _cyl_y(r, r_top, 0.0, h, seg=seg))

    def radius_at(y: float) -> float:
        return r + (r_top - r) * y / h

    y_hi = h + 0.1
    b.cut(
        "interior", _cyl_y(radius_at(bottom) - wall, radius_at(y_hi) - wall, bottom, y_hi, seg=seg)
    )
    xc = radius_at(hy * h)
    if handle_style == 0:
        loop = m3d.CrossSection.circle(hr, 12).scale((1.0, 1.4)).translate((hR * 0.75, 0.0))
        handle = loop.revolve(32).scale((1.0, 1.25, 1.0))
    else:
        o, i = hR, hR - 2 * hr
        handle = _box(-o * 0.8, o * 0.8, -o, o, -1.4 * hr, 1.4 * hr) - _box(
            -i * 0.8, i * 0.8, -i, i, -1.0, 1.0
        )
    b.add("handle", handle.translate((xc, hy * h, 0.0)))


def _lamp(p: _Params, b: _Builder) -> None:
    style = p.i(0, 3)  # 0 table lamp, 1 floor lamp, 2 desk lamp reaching to -z
    base_r, base_h, base_square = p.u(0.12, 0.25), p.u(0.02, 0.06), p.b(0.3)
    stem_r, stem_h = p.u(0.01, 0.03), p.u(0.30, 0.70)
    shade_rb, shade_taper, shade_h, shade_t = (
        p.u(0.12, 0.25),
        p.u(0.4, 1.0),
        p.u(0.12, 0.30),
        p.u(0.008, 0.015),
    )
    bulb_r, reach, lift = p.u(0.03, 0.05), p.u(0.20, 0.40), p.u(0.3, 0.7)
    if style == 1:
        stem_h *= 2.5
    if style == 2:
        shade_rb, shade_h = 0.6 * shade_rb, 0.7 * shade_h
    if base_square:
        b.add("base", _box(-base_r, base_r, 0.0, base_h, -base_r, base_r))
    else:
        b.add("base", _cyl_y(base_r, base_r * 0.9, 0.0, base_h, seg=32))
    cap = 0.02
    if style in (0, 1):
        head = np.array([0.0, base_h + stem_h, 0.0])
        b.add("stem", _cyl_y(stem_r, stem_r, base_h - 0.005, head[1] - cap * 0.5, seg=12))
    else:
        joint = np.array([0.0, base_h + stem_h * lift, 0.25 * reach])
        head = np.array([0.0, joint[1] + 0.1, -reach])
        b.add("stem", _rod((0.0, base_h - 0.005, 0.0), joint, stem_r))
        b.add("stem", m3d.Manifold.sphere(stem_r * 1.6, 12).translate(tuple(joint)))
        b.add("stem", _rod(joint, head - np.array([0.0, cap * 0.5, 0.0]), stem_r))
    y_top, y_bot = head[1], head[1] - shade_h
    rt = shade_rb * shade_taper
    outer = _cyl_y(shade_rb, rt, y_bot, y_top, head[0], head[2], seg=40)

    def r_at(y: float) -> float:
        return shade_rb + (rt - shade_rb) * (y - y_bot) / shade_h

    yc0, yc1 = y_bot - 0.01, y_top - cap
    cavity = _cyl_y(r_at(yc0) - shade_t, r_at(yc1) - shade_t, yc0, yc1, head[0], head[2], seg=40)
    b.add("shade", outer - cavity)
    yb = y_top - 0.45 * shade_h
    rb = min(bulb_r, 0.7 * (r_at(yb) - shade_t))
    b.add("bulb", m3d.Manifold.sphere(rb, 16).translate((head[0], yb, head[2])))
    if style == 2:  # bulb hangs from the head on the stem's axis
        b.add(
            "stem",
            _cyl_y(stem_r * 0.6, stem_r * 0.6, yb, y_top - cap * 0.5, head[0], head[2], seg=10),
        )


def _sofa(p: _Params, b: _Builder) -> None:
    W, D, sh = p.u(1.4, 2.4), p.u(0.75, 1.0), p.u(0.38, 0.48)
    bh, bt = p.u(0.30, 0.50), p.u(0.12, 0.25)
    arms, ah, aw, arm_round = p.b(0.85), p.u(0.10, 0.28), p.u(0.08, 0.22), p.b(0.4)
    n_cush, ct, back_cush = p.i(1, 4), p.u(0.08, 0.16), p.b(0.5)
    leg_h, leg_t = p.u(0.0, 0.12), p.u(0.03, 0.06)
    plinth = leg_h < 0.03
    base_y = 0.0 if plinth else leg_h
    wi = W / 2 - (aw if arms else 0.0)
    zf, zb = -D / 2, D / 2 - bt
    b.add("frame", _box(-W / 2, W / 2, base_y, sh - ct, zf, D / 2))
    b.add("back", _box(-W / 2, W / 2, base_y, sh + bh, zb, D / 2))
    if arms:
        for s in (-1, 1):
            xa, xb = sorted((s * W / 2, s * wi))
            b.add("arms", _box(xa, xb, base_y, sh + ah, zf, zb + 0.01))
            if arm_round:
                xm = (xa + xb) / 2
                b.add("arms", _rod((xm, sh + ah, zf), (xm, sh + ah, zb + 0.01), (xb - xa) / 2, 16))
    gap = 0.012
    cw = (2 * wi - gap * (n_cush + 1)) / n_cush
    for k in range(n_cush):
        x0 = -wi + gap + k * (cw + gap)
        b.add("cushions", _box(x0, x0 + cw, sh - ct - 0.005, sh, zf + 0.01, zb + 0.005))
        if back_cush:
            b.add("cushions", _box(x0, x0 + cw, sh - 0.005, sh + 0.85 * bh, zb - 0.12, zb + 0.005))
    if not plinth:
        xs = (-1, 1) if W < 1.8 else (-1, 0, 1)
        for sx in xs:
            for sz in (-1, 1):
                x, z = sx * (W / 2 - 2 * leg_t), sz * (D / 2 - 2 * leg_t)
                b.add("legs", _post((x, 0.0, z), (x, base_y + 0.005, z), leg_t, True))


_GENERATORS: dict[str, Callable[[_Params, _Builder], None]] = {
    "chair": _chair,
    "table": _table,
    "airplane": _airplane,
    "car": _car,
    "mug": _mug,
    "lamp": _lamp,
    "sofa": _sofa,
}


def check_category(category: str) -> int:
    """Index of ``category`` in CATEGORIES; ValueError naming the known ones otherwise."""
    if category not in CATEGORIES:
        raise ValueError(
            f"unknown synthetic category {category!r} (known: {', '.join(CATEGORIES)})"
        )
    return CATEGORIES.index(category)


def make_shape(category: str, rng: np.random.Generator) -> SyntheticShape:
    """Generate one random instance of ``category``.

    Args:
        category: one of :data:`CATEGORIES`.
        rng: the instance's generator (draws a fixed number of values per category).
    Returns:
        a watertight, centred, unit-bbox :class:`SyntheticShape` in canonical orientation.
    """
    index = check_category(category)
    names = PART_NAMES[category]
    params = _Params(rng)
    builder = _Builder(names)
    _GENERATORS[category](params, builder)
    colours = _pick_colours(category, rng)
    verts, faces, parts = _normalise_and_canonicalise(*builder.build())
    if len(params.values) > PARAM_SLOTS:
        raise RuntimeError(f"{category}: {len(params.values)} parameters > PARAM_SLOTS")
    vec = np.zeros(SHAPE_PARAM_DIM, dtype=np.float32)
    vec[index] = 1.0
    vec[len(CATEGORIES) : len(CATEGORIES) + len(params.values)] = params.values
    mesh = trimesh.Trimesh(vertices=verts, faces=faces, process=False)
    return SyntheticShape(
        mesh=mesh,
        face_parts=parts,
        part_colors=colours,
        part_names=names,
        shape_params=vec,
        category=category,
    )
