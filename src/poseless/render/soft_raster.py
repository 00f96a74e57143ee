"""SoftRas-style soft mesh rasterizer (Liu et al. 2019), sparse and pure torch.

Pipeline of small functional parts::

    project_vertices()  ->  find_candidates()  ->  blend_silhouette()       (fast path)
                                               ->  rasterize() -> blend_attributes()

* ``project_vertices`` maps world vertices to NDC + camera depth with the
  project's conventions (``poseless.geometry.cameras``: OpenCV camera, NDC x
  right / y down, pixel centres at ((2j+1)/W - 1, (2i+1)/H - 1)).
* ``find_candidates`` enumerates the (face, pixel) pairs whose pixel centre
  lies in the face's screen-space bounding box grown by the distance beyond
  which a face's soft coverage is negligible: with
  ``D = sigmoid(-d^2 / sigma) < prob_cutoff`` once
  ``d^2 > sigma * log(1 / prob_cutoff - 1)`` (about 11.5 sigma at 1e-5). Only
  those pairs are ever evaluated; every other pair has D = 0 exactly.
* ``blend_silhouette`` computes SoftRas' silhouette
  ``alpha = 1 - prod_j (1 - D_j)``, ``D_j = sigmoid(+-d_j^2 / sigma)`` (+ inside
  the projected triangle, - outside, d_j the NDC distance from the pixel centre
  to triangle j), summing ``log(1 - D_j)`` per pixel with ``index_add``; a
  custom autograd function carries a hand-written backward, so the pairs are
  visited once forward and once backward with no autograd graph in between.
* ``rasterize`` + ``blend_attributes`` (plain autograd) interpolate per-vertex
  attributes with perspective-correct barycentrics and aggregate faces either
  with SoftRas' softmax over normalised inverse depth (temperature gamma) or
  with a hard front-most test.

Faces with a vertex in front of the near plane (z < near) or entirely beyond
the far plane are ignored. Both face orientations are rendered (back faces
filled, as in URA). Everything is batched: B meshes seen by B cameras, or one
mesh by B cameras, or B meshes by one camera.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from poseless.geometry.cameras import pixel_centers_ndc, project_to_ndc, world_to_camera


@dataclass(frozen=True)
class SoftRasterSettings:
    """Settings of the soft rasterizer (defaults: URA / SoftRas)."""

    image_size: int = 64
    """Square image side in pixels (H = W)."""
    sigma: float = 1e-4
    """Sharpness of the coverage sigmoid D = sigmoid(+-d^2 / sigma), d in NDC units."""
    gamma: float = 1e-4
    """Temperature of the soft z-aggregation of attributes (smaller = harder)."""
    fov_deg: float = 30.0
    """Full field of view in degrees."""
    near: float = 1.0
    """Near plane: faces with any vertex at camera depth z < near are dropped."""
    far: float = 100.0
    """Far plane: faces with all vertices beyond it are dropped; also normalises depth."""
    prob_cutoff: float = 1e-5
    """Coverage below which a (face, pixel) pair is treated as D = 0 (sets the bbox margin)."""
    background_eps: float = 1e-3
    """Normalised inverse depth of the background in the soft z-aggregation (SoftRas eps)."""
    background: float = 0.0
    """Value blended in for the background in ``image`` (black, as in URA)."""

    def __post_init__(self) -> None:
        checks = [
            (
                isinstance(self.image_size, int) and self.image_size > 0,
                "image_size must be a positive int",
            ),
            (self.sigma > 0, "sigma must be > 0"),
            (self.gamma > 0, "gamma must be > 0"),
            (0 < self.fov_deg < 180, "fov_deg must be in (0, 180)"),
            (0 < self.near < self.far, "need 0 < near < far"),
            (0 < self.prob_cutoff < 0.5, "prob_cutoff must be in (0, 0.5)"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(f"SoftRasterSettings: {msg} (got {self})")

    @property
    def tan_half_fov(self) -> float:
        """tan(fov / 2)."""
        return math.tan(math.radians(self.fov_deg) / 2.0)

    @property
    def cutoff_dist2(self) -> float:
        """Squared NDC distance beyond which an outside pixel's coverage is < prob_cutoff."""
        return self.sigma * math.log(1.0 / self.prob_cutoff - 1.0)


@dataclass(frozen=True)
class Candidates:
    """Sparse (face, pixel) pairs to evaluate; N pairs over B images of H x W."""

    face: torch.Tensor
    """(N,) long index into the flattened (B * F) faces."""
    pixel: torch.Tensor
    """(N,) long index into the flattened (B * H * W) pixels."""
    xy: torch.Tensor
    """(N, 2) NDC coordinates of the pixel centres (x right, y down)."""
    batch_size: int
    """B."""
    num_faces: int
    """F (faces per mesh)."""
    image_size: int
    """H = W."""


@dataclass(frozen=True)
class Fragments:
    """Differentiable per-pair geometry from ``rasterize`` (N pairs)."""

    candidates: Candidates
    """The pairs these values belong to."""
    dist2: torch.Tensor
    """(N,) signed squared NDC distance: + inside the triangle, - outside."""
    bary: torch.Tensor
    """(N, 3) perspective-correct barycentrics, clamped to the triangle."""
    depth: torch.Tensor
    """(N,) camera depth z of the surface point under the pixel."""
    inside: torch.Tensor
    """(N,) bool: the pixel centre lies inside the projected triangle."""


@dataclass(frozen=True)
class RenderOutput:
    """Images from ``render_soft``."""

    alpha: torch.Tensor
    """(B, 1, H, W) coverage: soft silhouette (mode 'soft') or binary mask (mode 'hard')."""
    image: torch.Tensor
    """(B, C, H, W) blended attributes, ``background`` where nothing is hit."""
    depth: torch.Tensor
    """(B, 1, H, W) blended camera depth, 0 on the background."""


# ---------------------------------------------------------------------------
# Input checking and projection
# ---------------------------------------------------------------------------


def _broadcast_inputs(vertices, faces, R, t):
    if vertices.dim() != 3 or vertices.shape[-1] != 3:
        raise ValueError(f"vertices: expected shape (B, V, 3), got {tuple(vertices.shape)}")
    if R.dim() != 3 or R.shape[-2:] != (3, 3):
        raise ValueError(f"R: expected shape (B, 3, 3), got {tuple(R.shape)}")
    if t.dim() != 2 or t.shape[-1] != 3 or t.shape[0] != R.shape[0]:
        raise ValueError(f"t: expected shape ({R.shape[0]}, 3), got {tuple(t.shape)}")
    if faces.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"faces: expected an integer tensor, got {faces.dtype}")
    if faces.shape[-1] != 3 or faces.dim() not in (2, 3):
        raise ValueError(f"faces: expected shape (F, 3) or (B, F, 3), got {tuple(faces.shape)}")
    Bv, Bc = vertices.shape[0], R.shape[0]
    Bf = faces.shape[0] if faces.dim() == 3 else 1
    B = max(Bv, Bc, Bf)
    for name, n in (("vertices", Bv), ("R/t", Bc), ("faces", Bf)):
        if n not in (1, B):
            raise ValueError(f"{name}: batch size {n} does not broadcast to {B}")
    if faces.numel() and (int(faces.min()) < 0 or int(faces.max()) >= vertices.shape[1]):
        raise ValueError(f"faces: indices must lie in [0, {vertices.shape[1]})")
    vertices = vertices.expand(B, -1, -1)
    R, t = R.to(vertices.dtype).expand(B, -1, -1), t.to(vertices.dtype).expand(B, -1)
    faces = faces.long()
    faces = faces[None].expand(B, -1, -1) if faces.dim() == 2 else faces.expand(B, -1, -1)
    return vertices, faces, R, t


def project_vertices(
    vertices: torch.Tensor, R: torch.Tensor, t: torch.Tensor, tan_half_fov: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """World vertices -> NDC and camera depth.

    Args:
        vertices: (B, V, 3) world frame; R: (B, 3, 3), t: (B, 3) world->camera.
    Returns:
        ndc: (B, V, 2) x right, y down; depth: (B, V) camera z (> 0 in front).
    """
    cam = world_to_camera(vertices, R, t)
    return project_to_ndc(cam, tan_half_fov)


def gather_faces(per_vertex: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """per_vertex (B, V, C), faces (B, F, 3) long -> (B, F, 3, C) corner values."""
    B, _, C = per_vertex.shape
    F = faces.shape[1]
    idx = faces.reshape(B, F * 3, 1).expand(-1, -1, C)
    return torch.gather(per_vertex, 1, idx).reshape(B, F, 3, C)


# ---------------------------------------------------------------------------
# Screen-space windows and candidate pairs
# ---------------------------------------------------------------------------

_LADDER = (2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)
"""Window side lengths: a face's bbox is padded up to the next rung (few buckets, < 2x waste)."""


@dataclass(frozen=True)
class FaceWindows:
    """Per-face pixel windows (bbox grown by the coverage cutoff, clipped to the image)."""

    origin: torch.Tensor
    """(B*F, 2) long (column, row) of each window's first pixel."""
    extent: torch.Tensor
    """(B*F, 2) long (width, height) in pixels; 0 for dropped faces (near plane, off-screen)."""
    buckets: tuple[tuple[torch.Tensor, int, int], ...]
    """Faces grouped by padded window size: (face ids (n,), height Kh, width Kw)."""
    batch_size: int
    """B."""
    num_faces: int
    """F (faces per mesh)."""
    image_size: int
    """H = W."""


@torch.no_grad()
def face_windows(
    face_ndc: torch.Tensor, face_depth: torch.Tensor, settings: SoftRasterSettings
) -> FaceWindows:
    """Pixel windows of the faces: the pixels whose coverage can exceed ``prob_cutoff``.

    Args:
        face_ndc: (B, F, 3, 2) projected corners; face_depth: (B, F, 3) camera z.
    Returns:
        FaceWindows; faces with a corner in front of the near plane, entirely
        beyond the far plane, non-finite or off-screen get an empty window.
    """
    B, F = face_ndc.shape[:2]
    S = settings.image_size
    fn = face_ndc.reshape(B * F, 3, 2)
    fz = face_depth.reshape(B * F, 3)
    valid = (fz >= settings.near).all(dim=1) & (fz <= settings.far).any(dim=1)
    valid &= torch.isfinite(fn).all(dim=2).all(dim=1)
    fn = torch.where(valid[:, None, None], fn, torch.full_like(fn, 10.0))
    margin = math.sqrt(settings.cutoff_dist2)
    lo = fn.amin(dim=1) - margin  # (BF, 2)
    hi = fn.amax(dim=1) + margin
    # Pixel k has its centre at (2k + 1)/S - 1, i.e. k = ((x + 1) S - 1) / 2.
    kmin = torch.ceil(((lo + 1.0) * S - 1.0) * 0.5).clamp(0, S).long()
    kmax = torch.floor(((hi + 1.0) * S - 1.0) * 0.5).clamp(-1, S - 1).long()
    extent = (kmax - kmin + 1).clamp(min=0) * valid[:, None]
    ladder = torch.tensor(_LADDER, device=fn.device)
    if S > _LADDER[-1]:
        raise ValueError(f"SoftRasterSettings.image_size: at most {_LADDER[-1]}, got {S}")
    rung = torch.searchsorted(ladder, extent)  # (BF, 2) index of the smallest rung >= extent
    nonempty = (extent > 0).all(dim=1)
    key = rung[:, 1] * len(_LADDER) + rung[:, 0]
    key = torch.where(nonempty, key, torch.full_like(key, -1))
    order = torch.argsort(key)
    keys, counts = torch.unique_consecutive(key[order], return_counts=True)
    buckets = []
    start = 0
    for k, n in zip(keys.tolist(), counts.tolist()):
        if k >= 0:
            buckets.append(
                (order[start : start + n], _LADDER[k // len(_LADDER)], _LADDER[k % len(_LADDER)])
            )
        start += n
    return FaceWindows(
        origin=kmin, extent=extent, buckets=tuple(buckets), batch_size=B, num_faces=F, image_size=S
    )


@torch.no_grad()
def find_candidates(windows: FaceWindows, dtype=None) -> Candidates:
    """Enumerate the (face, pixel) pairs of all windows (face-major order).

    Returns:
        Candidates with N = sum of window areas pairs.
    """
    S, F = windows.image_size, windows.num_faces
    ext, kmin = windows.extent, windows.origin
    device = ext.device
    count = ext[:, 0] * ext[:, 1]
    total = int(count.sum())
    face = torch.repeat_interleave(
        torch.arange(count.shape[0], device=device), count, output_size=total
    )
    start = torch.cumsum(count, 0) - count
    k = torch.arange(total, device=device) - start[face]
    width = ext[face, 0]
    col = kmin[face, 0] + k % width
    row = kmin[face, 1] + torch.div(k, width, rounding_mode="floor")
    pixel = ((face // F) * S + row) * S + col
    xy = torch.stack([col, row], dim=-1).to(dtype or torch.get_default_dtype())
    xy = xy.mul_(2.0 / S).add_(1.0 / S - 1.0)
    return Candidates(
        face=face, pixel=pixel, xy=xy, batch_size=windows.batch_size, num_faces=F, image_size=S
    )


# ---------------------------------------------------------------------------
# Fast silhouette over windows
# ---------------------------------------------------------------------------


def _edge_frames(tri: torch.Tensor):
    """Per-face edge frames.

    Args:
        tri: (n, 3, 2) corners.
    Returns:
        unit_e: (n, 3, 2) unit direction of edge k (corner k -> k+1);
        unit_n: (n, 3, 2) unit normal pointing into the triangle;
        length: (n, 3) edge lengths; nondegenerate: (n,) bool (non-zero area).
        Zero-length edges get direction (1, 0) so that distances stay exact.
    """
    e = torch.roll(tri, shifts=-1, dims=1) - tri
    length = e.norm(dim=-1)  # (n, 3)
    tiny = length < 1e-20
    unit_e = torch.where(
        tiny[..., None],
        torch.tensor([1.0, 0.0], dtype=tri.dtype, device=tri.device),
        e / length.clamp_min(1e-20)[..., None],
    )
    area2 = e[:, 0, 0] * (-e[:, 2, 1]) - e[:, 0, 1] * (-e[:, 2, 0])  # cross(e0, c2 - c0)
    orient = torch.where(area2 < 0, -1.0, 1.0).to(tri.dtype)
    unit_n = torch.stack([-unit_e[..., 1], unit_e[..., 0]], dim=-1) * orient[:, None, None]
    return unit_e, unit_n, length, area2.abs() > 1e-30


def _window_geometry(tri: torch.Tensor, origin_xy: torch.Tensor, Kh: int, Kw: int, S: int):
    """Exact point-triangle geometry on (n, Kh, Kw) pixel windows, all 3 edges at once.

    The signed distance to edge k's line (``perp``, + towards the inside) and
    the position along it (``along``) are linear in the pixel's row and column,
    so each is one broadcast add of a row part (3, n, Kh, 1) and a column part
    (3, n, 1, Kw).

    Args:
        tri: (n, 3, 2) corners; origin_xy: (n, 2) NDC of each window's first pixel.
    Returns:
        dist2: (n, Kh, Kw) squared distance to the triangle boundary;
        inside: (n, Kh, Kw) bool; edge: (n, Kh, Kw) long nearest edge;
        perp, excess, clamped: (3, n, Kh, Kw) per edge (excess = along -
        clamped, clamped = along clamped to [0, length]); frames from ``_edge_frames``.
    """
    unit_e, unit_n, length, nondeg = _edge_frames(tri)
    step = 2.0 / S
    jj = torch.arange(Kw, dtype=tri.dtype, device=tri.device) * step  # (Kw,)
    ii = torch.arange(Kh, dtype=tri.dtype, device=tri.device)[:, None] * step  # (Kh, 1)
    rel = (origin_xy[:, None, :] - tri).permute(1, 0, 2)[..., None, None]  # (3, n, 2, 1, 1)
    ue = unit_e.permute(1, 0, 2)[..., None, None]  # (3, n, 2, 1, 1)
    un = unit_n.permute(1, 0, 2)[..., None, None]
    cx = rel[:, :, 0] + jj  # (3, n, 1, Kw)
    cy = rel[:, :, 1] + ii  # (3, n, Kh, 1)
    perp = torch.add(un[:, :, 0] * cx, un[:, :, 1] * cy)  # (3, n, Kh, Kw)
    along = torch.add(ue[:, :, 0] * cx, ue[:, :, 1] * cy)
    lengths = length.t()[..., None, None]  # (3, n, 1, 1)
    clamped = torch.minimum(along.clamp_min(0.0), lengths)
    excess = along - clamped
    dd = torch.addcmul(perp * perp, excess, excess)
    dist2, edge = dd.min(dim=0)
    inside = (perp.amin(dim=0) > 0) & nondeg[:, None, None]
    return dist2, inside, edge, perp, excess, clamped, (unit_e, unit_n, length)


class _SoftSilhouette(torch.autograd.Function):
    """alpha = 1 - prod_j (1 - D_j) over face windows with a hand-written backward.

    For a pair with nearest boundary point q on edge k (corner k -> k+1) at
    parameter t, d^2 = |p - q|^2 and p - q = perp * n_k + excess * e_k, so
    d(d^2)/d(corner k) = -2 (1 - t)(p - q), d(d^2)/d(corner k+1) = -2 t (p - q);
    d(alpha)/d(d^2_j) = (1 - alpha) * D_j * sign_j / sigma.
    """

    @staticmethod
    def forward(ctx, face_ndc_flat, windows: FaceWindows, sigma: float, cutoff: float):
        # face_ndc_flat: (BF, 3, 2)
        S, B = windows.image_size, windows.batch_size
        P = B * S * S
        dtype, device = face_ndc_flat.dtype, face_ndc_flat.device
        acc = torch.zeros(P + 1, dtype=dtype, device=device)  # last slot: discarded
        saved = []
        for face_ids, Kh, Kw in windows.buckets:
            tri = face_ndc_flat[face_ids]  # (n, 3, 2)
            org = windows.origin[face_ids]  # (n, 2) col, row
            ext = windows.extent[face_ids]
            origin_xy = org.to(dtype) * (2.0 / S) + (1.0 / S - 1.0)
            dist2, inside, edge, perp, excess, clamped, frames = _window_geometry(
                tri, origin_xy, Kh, Kw, S
            )
            jj = torch.arange(Kw, device=device)
            ii = torch.arange(Kh, device=device)[:, None]
            in_win = (ii < ext[:, 1, None, None]) & (jj < ext[:, 0, None, None])  # (n, Kh, Kw)
            b = torch.div(face_ids, windows.num_faces, rounding_mode="floor")
            base = ((b * S + org[:, 1]) * S + org[:, 0])[:, None, None]
            live = in_win & (inside | (dist2 <= cutoff))
            pix = torch.where(live, base + (ii * S + jj), P)
            x = torch.where(inside, dist2, -dist2) * (1.0 / sigma)
            log1m = -torch.nn.functional.softplus(x)
            acc.index_add_(0, pix.reshape(-1), log1m.reshape(-1))
            # dalpha/d dist2 = transmit * coef with coef = D * sign / sigma (0 where not live).
            coef = torch.where(live, -torch.expm1(log1m), 0.0) * torch.where(
                inside, 1.0 / sigma, -1.0 / sigma
            )
            saved += [face_ids, pix, edge, perp, excess, clamped, coef]
        transmit = torch.exp(acc[:P])
        ctx.save_for_backward(face_ndc_flat, transmit, *saved)
        return 1.0 - transmit

    @staticmethod
    def backward(ctx, grad_alpha):
        face_ndc_flat, transmit, *saved = ctx.saved_tensors
        gt = torch.cat([grad_alpha * transmit, grad_alpha.new_zeros(1)])  # (P + 1,)
        grad = torch.zeros_like(face_ndc_flat)  # (BF, 3, 2)
        ks = torch.arange(3, device=grad.device)[:, None, None, None]
        for i in range(0, len(saved), 7):
            face_ids, pix, edge, perp, excess, clamped, coef = saved[i : i + 7]
            unit_e, unit_n, length, _ = _edge_frames(face_ndc_flat[face_ids])
            g = -2.0 * gt[pix] * coef  # (n, Kh, Kw) = -2 dL/d(dist2)
            gk = torch.where(edge == ks, g, 0.0)  # (3, n, Kh, Kw) routed to the nearest edge
            t = clamped / length.t()[..., None, None].clamp_min(1e-20)
            ge = gk * t  # weight of each edge's end corner
            gs = gk - ge  # weight of its start corner
            s_perp = (gs * perp).sum(dim=(2, 3)).t()[..., None]  # (n, 3, 1)
            s_exc = (gs * excess).sum(dim=(2, 3)).t()[..., None]
            e_perp = (ge * perp).sum(dim=(2, 3)).t()[..., None]
            e_exc = (ge * excess).sum(dim=(2, 3)).t()[..., None]
            g_start = s_perp * unit_n + s_exc * unit_e  # (n, 3, 2) per edge k -> corner k
            g_end = e_perp * unit_n + e_exc * unit_e  # per edge k -> corner k + 1
            grad[face_ids] = g_start + torch.roll(g_end, shifts=1, dims=1)
        return grad, None, None, None


def blend_silhouette(
    face_ndc: torch.Tensor, windows: FaceWindows, settings: SoftRasterSettings
) -> torch.Tensor:
    """SoftRas silhouette over face windows (fast path, hand-written backward).

    Args:
        face_ndc: (B, F, 3, 2) projected corners (differentiable).
        windows: from ``face_windows`` on the same faces.
    Returns:
        alpha: (B, 1, H, W) = 1 - prod_j (1 - D_j) in [0, 1]; pairs outside a
        face's window, or outside the triangle beyond the cutoff, have D = 0.
    """
    B, F = face_ndc.shape[:2]
    S = windows.image_size
    alpha = _SoftSilhouette.apply(
        face_ndc.reshape(B * F, 3, 2), windows, settings.sigma, settings.cutoff_dist2
    )
    return alpha.reshape(B, 1, S, S)


def rasterize(
    face_ndc: torch.Tensor, face_depth: torch.Tensor, candidates: Candidates
) -> Fragments:
    """Differentiable per-pair geometry (plain autograd).

    Args:
        face_ndc: (B, F, 3, 2) projected corners; face_depth: (B, F, 3) camera z.
        candidates: pairs from ``find_candidates``.
    Returns:
        Fragments: signed squared distance, perspective-correct barycentrics
        (screen-space barycentrics clamped to [0, 1] and renormalised, as in
        SoftRas, then divided by corner depth and renormalised), depth.
    """
    B, F = face_ndc.shape[:2]
    tri = face_ndc.reshape(B * F, 3, 2)[candidates.face]  # (N, 3, 2)
    z = face_depth.reshape(B * F, 3)[candidates.face]  # (N, 3)
    p = candidates.xy
    e = torch.roll(tri, shifts=-1, dims=1) - tri
    q = p[:, None, :] - tri
    ee = (e * e).sum(-1).clamp_min(1e-30)
    tt = ((q * e).sum(-1) / ee).clamp(0.0, 1.0)
    diff = q - tt[..., None] * e
    dist2 = (diff * diff).sum(-1).amin(dim=1)
    cross = e[..., 0] * q[..., 1] - e[..., 1] * q[..., 0]  # (N, 3): edge k = corner k -> k+1
    inside = (cross > 0).all(dim=1) | (cross < 0).all(dim=1)
    area = cross.sum(dim=1)  # twice the signed area
    safe_area = torch.where(area.abs() < 1e-30, torch.full_like(area, 1e-30), area)
    # Corner k's weight is the sub-triangle opposite it, i.e. edge k+1.
    w = torch.roll(cross, shifts=-1, dims=1) / safe_area[:, None]
    w = w.clamp(0.0, 1.0)
    w = w / w.sum(dim=1, keepdim=True).clamp_min(1e-12)
    wp = w / z
    wsum = wp.sum(dim=1, keepdim=True)
    bary = wp / wsum
    depth = 1.0 / wsum[:, 0]
    return Fragments(
        candidates=candidates,
        dist2=torch.where(inside, dist2, -dist2),
        bary=bary,
        depth=depth,
        inside=inside,
    )


def blend_attributes(
    fragments: Fragments,
    face_attributes: torch.Tensor,
    settings: SoftRasterSettings,
    mode: str = "soft",
) -> RenderOutput:
    """Aggregate per-pair attributes into images.

    Args:
        fragments: from ``rasterize``.
        face_attributes: (B, F, 3, C) per-corner attributes.
        mode: "soft" (SoftRas: weights D_j exp(z_j / gamma) normalised together with
            a background term exp(eps / gamma), z_j = (far - depth) / (far - near);
            alpha is the soft silhouette) or "hard" (the front-most face whose
            triangle contains the pixel centre; alpha is the binary mask).
    Returns:
        RenderOutput with alpha (B, 1, H, W), image (B, C, H, W), depth (B, 1, H, W).
    """
    if mode not in ("soft", "hard"):
        raise ValueError(f"mode: expected 'soft' or 'hard', got {mode!r}")
    c = fragments.candidates
    B, F, S = c.batch_size, c.num_faces, c.image_size
    C = face_attributes.shape[-1]
    P = B * S * S
    dtype, device = fragments.dist2.dtype, fragments.dist2.device
    attr = face_attributes.reshape(B * F, 3, C)[c.face]  # (N, 3, C)
    value = (fragments.bary[..., None] * attr).sum(dim=1)  # (N, C)
    depth = fragments.depth
    if mode == "soft":
        x = fragments.dist2 / settings.sigma
        zn = (settings.far - depth) / (settings.far - settings.near)
        logit = torch.nn.functional.logsigmoid(x) + zn / settings.gamma  # (N,)
        bg = settings.background_eps / settings.gamma
        m = torch.full((P,), bg, dtype=dtype, device=device)
        m = m.scatter_reduce(0, c.pixel, logit.detach(), reduce="amax", include_self=True)
        ew = torch.exp(logit - m[c.pixel])
        ebg = torch.exp(bg - m)
        denom = ebg.index_add(0, c.pixel, ew)  # (P,)
        w = ew / denom[c.pixel]
        w_bg = ebg / denom
        log1m = -torch.nn.functional.softplus(x)
        alpha = 1.0 - torch.exp(
            torch.zeros(P, dtype=dtype, device=device).index_add(0, c.pixel, log1m)
        )
    else:
        inf = torch.full_like(depth, float("inf"))
        zin = torch.where(fragments.inside, depth, inf).detach()
        zmin = torch.full((P,), float("inf"), dtype=dtype, device=device)
        zmin = zmin.scatter_reduce(0, c.pixel, zin, reduce="amin", include_self=True)
        sel = (fragments.inside & (zin == zmin[c.pixel])).to(dtype)
        count = torch.zeros(P, dtype=dtype, device=device).index_add(0, c.pixel, sel)
        w = sel / count[c.pixel].clamp_min(1.0)
        alpha = (count > 0).to(dtype)
        w_bg = 1.0 - alpha
    image = torch.zeros(P, C, dtype=dtype, device=device).index_add(0, c.pixel, w[:, None] * value)
    image = image + w_bg[:, None] * settings.background
    depth_img = torch.zeros(P, dtype=dtype, device=device).index_add(0, c.pixel, w * depth)
    return RenderOutput(
        alpha=alpha.reshape(B, 1, S, S),
        image=image.reshape(B, S, S, C).permute(0, 3, 1, 2),
        depth=depth_img.reshape(B, 1, S, S),
    )


# ---------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------


def render_silhouettes(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    R: torch.Tensor,
    t: torch.Tensor,
    settings: SoftRasterSettings = SoftRasterSettings(),  # noqa: B008 (frozen value)
) -> torch.Tensor:
    """SoftRas soft silhouettes.

    Args:
        vertices: (B, V, 3) world frame.
        faces: (F, 3) long shared by the batch, or (B, F, 3).
        R: (B, 3, 3), t: (B, 3) world->camera (``cameras.kato_extrinsics``).
            Batch sizes of 1 broadcast against the others.
    Returns:
        (B, 1, H, W) soft alpha in [0, 1], differentiable w.r.t. vertices, R and t.
    """
    vertices, faces, R, t = _broadcast_inputs(vertices, faces, R, t)
    ndc, depth = project_vertices(vertices, R, t, settings.tan_half_fov)
    face_ndc = gather_faces(ndc, faces)  # (B, F, 3, 2)
    face_depth = gather_faces(depth[..., None], faces)[..., 0]  # (B, F, 3)
    windows = face_windows(face_ndc.detach(), face_depth.detach(), settings)
    return blend_silhouette(face_ndc, windows, settings)


def render_soft(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    R: torch.Tensor,
    t: torch.Tensor,
    attributes: torch.Tensor,
    settings: SoftRasterSettings = SoftRasterSettings(),  # noqa: B008 (frozen value)
    mode: str = "soft",
) -> RenderOutput:
    """Render per-vertex attributes (normals, colours, ...) with soft or hard z-aggregation.

    Args:
        vertices: (B, V, 3) world frame; faces: (F, 3) or (B, F, 3) long.
        R: (B, 3, 3), t: (B, 3) world->camera.
        attributes: (B, V, C) per-vertex values, interpolated perspective-correctly.
        mode: "soft" or "hard" (see ``blend_attributes``).
    Returns:
        RenderOutput: alpha (B, 1, H, W), image (B, C, H, W), depth (B, 1, H, W).
        Note: the soft mode only aggregates faces within the coverage cutoff of a
        pixel (``prob_cutoff``), like the silhouette.
    """
    vertices, faces, R, t = _broadcast_inputs(vertices, faces, R, t)
    B, V = vertices.shape[:2]
    if attributes.dim() != 3 or attributes.shape[1] != V or attributes.shape[0] not in (1, B):
        raise ValueError(f"attributes: expected shape ({B}, {V}, C), got {tuple(attributes.shape)}")
    attributes = attributes.to(vertices.dtype).expand(B, -1, -1)
    ndc, depth = project_vertices(vertices, R, t, settings.tan_half_fov)
    face_ndc = gather_faces(ndc, faces)
    face_depth = gather_faces(depth[..., None], faces)[..., 0]
    windows = face_windows(face_ndc.detach(), face_depth.detach(), settings)
    fragments = rasterize(face_ndc, face_depth, find_candidates(windows, face_ndc.dtype))
    out = blend_attributes(fragments, gather_faces(attributes, faces), settings, mode)
    if mode == "soft":
        # Same values as the autograd alpha, cheaper backward.
        out = RenderOutput(
            alpha=blend_silhouette(face_ndc, windows, settings), image=out.image, depth=out.depth
        )
    return out


def render_silhouettes_dense(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    R: torch.Tensor,
    t: torch.Tensor,
    settings: SoftRasterSettings = SoftRasterSettings(),  # noqa: B008 (frozen value)
) -> torch.Tensor:
    """Naive dense SoftRas silhouettes: every pixel against every face (plain autograd).

    O(B * F * H * W) memory; the baseline that ``render_silhouettes`` is
    benchmarked against. No coverage cutoff. Same arguments and output.
    """
    vertices, faces, R, t = _broadcast_inputs(vertices, faces, R, t)
    ndc, depth = project_vertices(vertices, R, t, settings.tan_half_fov)
    B, F = faces.shape[:2]
    S = settings.image_size
    face_ndc = gather_faces(ndc, faces)  # (B, F, 3, 2)
    face_depth = gather_faces(depth[..., None], faces)[..., 0]
    valid = (face_depth >= settings.near).all(-1) & (face_depth <= settings.far).any(-1)  # (B, F)
    pix = pixel_centers_ndc(S, S, device=ndc.device, dtype=ndc.dtype).reshape(1, 1, -1, 1, 2)
    tri = face_ndc[:, :, None]  # (B, F, 1, 3, 2)
    e = torch.roll(tri, shifts=-1, dims=3) - tri
    q = pix - tri  # (B, F, P, 3, 2)
    tt = ((q * e).sum(-1) / (e * e).sum(-1).clamp_min(1e-30)).clamp(0.0, 1.0)
    diff = q - tt[..., None] * e
    dist2 = (diff * diff).sum(-1).amin(-1)  # (B, F, P)
    cross = e[..., 0] * q[..., 1] - e[..., 1] * q[..., 0]
    inside = (cross > 0).all(-1) | (cross < 0).all(-1)
    x = torch.where(inside, dist2, -dist2) / settings.sigma
    log1m = -torch.nn.functional.softplus(x) * valid[..., None]
    return (1.0 - torch.exp(log1m.sum(dim=1))).reshape(B, 1, S, S)


__all__ = [
    "Candidates",
    "Fragments",
    "RenderOutput",
    "SoftRasterSettings",
    "blend_attributes",
    "blend_silhouette",
    "find_candidates",
    "gather_faces",
    "project_vertices",
    "rasterize",
    "render_silhouettes",
    "render_silhouettes_dense",
    "render_soft",
]
