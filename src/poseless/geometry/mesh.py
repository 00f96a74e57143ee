"""Triangle-mesh utilities: icosphere templates, Laplacian and flatten losses, normals.

Faces are (F, 3) long tensors of vertex indices, counter-clockwise seen from
outside, so ``cross(v1 - v0, v2 - v0)`` points outwards. Batched vertices are
(B, V, 3); a template's topology (faces, Laplacian, dihedral index lists) is
shared by the whole batch and precomputed once in ``MeshTopology``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

# ---------------------------------------------------------------------------
# Icosphere
# ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _icosphere_np(level: int) -> tuple[np.ndarray, np.ndarray]:
    t = (1.0 + 5.0**0.5) / 2.0
    verts = [
        (-1, t, 0), (1, t, 0), (-1, -t, 0), (1, -t, 0),
        (0, -1, t), (0, 1, t), (0, -1, -t), (0, 1, -t),
        (t, 0, -1), (t, 0, 1), (-t, 0, -1), (-t, 0, 1),
    ]  # fmt: skip
    faces = [
        (0, 11, 5), (0, 5, 1), (0, 1, 7), (0, 7, 10), (0, 10, 11),
        (1, 5, 9), (5, 11, 4), (11, 10, 2), (10, 7, 6), (7, 1, 8),
        (3, 9, 4), (3, 4, 2), (3, 2, 6), (3, 6, 8), (3, 8, 9),
        (4, 9, 5), (2, 4, 11), (6, 2, 10), (8, 6, 7), (9, 8, 1),
    ]  # fmt: skip
    v = np.asarray(verts, dtype=np.float64)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    f = np.asarray(faces, dtype=np.int64)
    for _ in range(level):
        # One midpoint per undirected edge, numbered after the existing vertices.
        e = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]], axis=0)  # (3F, 2)
        key = np.sort(e, axis=1)
        uniq, inv = np.unique(key, axis=0, return_inverse=True)
        mid = v[uniq[:, 0]] + v[uniq[:, 1]]
        mid /= np.linalg.norm(mid, axis=1, keepdims=True)
        nf = f.shape[0]
        m = inv.reshape(-1) + v.shape[0]
        m01, m12, m20 = m[:nf], m[nf : 2 * nf], m[2 * nf :]
        v = np.concatenate([v, mid], axis=0)
        f = np.concatenate(
            [
                np.stack([f[:, 0], m01, m20], 1),
                np.stack([f[:, 1], m12, m01], 1),
                np.stack([f[:, 2], m20, m12], 1),
                np.stack([m01, m12, m20], 1),
            ],
            axis=0,
        )
    v.setflags(write=False)
    f.setflags(write=False)
    return v, f


def icosphere(level: int = 3, dtype=None, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit-radius icosphere (cached per level).

    Level L has 10 * 4^L + 2 vertices and 20 * 4^L faces (level 3: 642 / 1280,
    the URA/SoftRas template); faces are oriented outwards.

    Returns:
        vertices: (V, 3) float; faces: (F, 3) long.
    """
    if not isinstance(level, int) or level < 0 or level > 7:
        raise ValueError(f"icosphere level: expected an int in [0, 7], got {level!r}")
    v, f = _icosphere_np(level)
    dtype = dtype or torch.get_default_dtype()
    return (
        torch.tensor(v, dtype=dtype, device=device),
        torch.tensor(f, dtype=torch.long, device=device),
    )


# ---------------------------------------------------------------------------
# Topology
# ---------------------------------------------------------------------------


def _check_faces(faces: torch.Tensor, num_vertices: int | None = None) -> None:
    if faces.dim() != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces: expected shape (F, 3), got {tuple(faces.shape)}")
    if faces.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"faces: expected an integer tensor, got {faces.dtype}")
    if num_vertices is not None and faces.numel() and int(faces.max()) >= num_vertices:
        raise ValueError(
            f"faces: index {int(faces.max())} out of range for {num_vertices} vertices"
        )


def mesh_edges(faces: torch.Tensor) -> torch.Tensor:
    """Unique undirected edges: faces (F, 3) -> (E, 2) long with e[:, 0] < e[:, 1]."""
    _check_faces(faces)
    f = faces.long()
    e = torch.cat([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]], dim=0)
    return torch.unique(torch.sort(e, dim=1).values, dim=0)


def uniform_laplacian(faces: torch.Tensor, num_vertices: int) -> torch.Tensor:
    """Uniform (graph) Laplacian with rows normalised: L_ii = 1, L_ij = -1/deg(i).

    Args:
        faces: (F, 3) long.
    Returns:
        L: sparse COO (V, V) in the default float dtype; isolated vertices get
        an all-zero row.
    """
    _check_faces(faces, num_vertices)
    edges = mesh_edges(faces).to(faces.device)
    i = torch.cat([edges[:, 0], edges[:, 1]])
    j = torch.cat([edges[:, 1], edges[:, 0]])
    deg = torch.bincount(i, minlength=num_vertices).to(torch.get_default_dtype())
    diag = torch.arange(num_vertices, device=faces.device)
    has = deg > 0
    rows = torch.cat([i, diag[has]])
    cols = torch.cat([j, diag[has]])
    vals = torch.cat([-1.0 / deg[i], torch.ones(int(has.sum()), device=faces.device)])
    return torch.sparse_coo_tensor(
        torch.stack([rows, cols]), vals, (num_vertices, num_vertices), check_invariants=True
    ).coalesce()


def flatten_index(faces: torch.Tensor) -> torch.Tensor:
    """Dihedral index lists for the flatten loss.

    Args:
        faces: (F, 3) long.
    Returns:
        (E, 4) long: (v0, v1, a, b) for every edge shared by exactly two faces,
        with (v0, v1) the edge and a, b the vertices opposite it in the two faces.
        Boundary and non-manifold edges are left out.
    """
    _check_faces(faces)
    f = faces.long().cpu()
    # Directed half-edges (u, v) with their opposite vertex w, per face.
    u = torch.cat([f[:, 0], f[:, 1], f[:, 2]])
    v = torch.cat([f[:, 1], f[:, 2], f[:, 0]])
    w = torch.cat([f[:, 2], f[:, 0], f[:, 1]])
    lo, hi = torch.minimum(u, v), torch.maximum(u, v)
    n = int(f.max()) + 1 if f.numel() else 1
    key = lo * n + hi
    order = torch.argsort(key, stable=True)
    key_s, lo_s, hi_s, w_s = key[order], lo[order], hi[order], w[order]
    uniq, counts = torch.unique_consecutive(key_s, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    keep = starts[counts == 2]
    out = torch.stack([lo_s[keep], hi_s[keep], w_s[keep], w_s[keep + 1]], dim=1)
    return out.to(faces.device)


@dataclass(frozen=True)
class MeshTopology:
    """Precomputed topology of a template mesh shared by a batch."""

    faces: torch.Tensor
    """(F, 3) long vertex indices, outward-oriented."""
    num_vertices: int
    """Number of vertices V."""
    laplacian: torch.Tensor
    """Sparse (V, V) uniform Laplacian (L_ii = 1, L_ij = -1/deg)."""
    dihedral: torch.Tensor
    """(E, 4) long (v0, v1, a, b) per interior edge, for ``flatten_loss``."""

    @classmethod
    def from_faces(cls, faces: torch.Tensor, num_vertices: int) -> MeshTopology:
        """Build all index structures of a mesh with faces (F, 3)."""
        _check_faces(faces, num_vertices)
        return cls(
            faces=faces.long(),
            num_vertices=int(num_vertices),
            laplacian=uniform_laplacian(faces, num_vertices),
            dihedral=flatten_index(faces),
        )

    @classmethod
    def icosphere(cls, level: int = 3, device=None) -> MeshTopology:
        """Topology of ``icosphere(level)``."""
        v, f = icosphere(level, device=device)
        return cls.from_faces(f, v.shape[0])

    def to(self, device) -> MeshTopology:
        """Copy onto ``device``."""
        return MeshTopology(
            faces=self.faces.to(device),
            num_vertices=self.num_vertices,
            laplacian=self.laplacian.to(device),
            dihedral=self.dihedral.to(device),
        )


# ---------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------


def _check_verts(verts: torch.Tensor, name: str = "verts") -> None:
    if verts.dim() != 3 or verts.shape[-1] != 3:
        raise ValueError(f"{name}: expected shape (B, V, 3), got {tuple(verts.shape)}")


def laplacian_loss(verts: torch.Tensor, laplacian: torch.Tensor) -> torch.Tensor:
    """Uniform Laplacian smoothness loss (URA/SoftRas): mean_b sum_i ||(L v_b)_i||^2.

    Args:
        verts: (B, V, 3) absolute vertex positions.
        laplacian: sparse (V, V) from ``uniform_laplacian``.
    Returns:
        () scalar.
    """
    _check_verts(verts)
    B, V, _ = verts.shape
    if laplacian.shape != (V, V):
        raise ValueError(f"laplacian: shape {tuple(laplacian.shape)} does not match V = {V}")
    L = laplacian.to(dtype=verts.dtype, device=verts.device)
    flat = verts.permute(1, 0, 2).reshape(V, B * 3)  # (V, B*3)
    lv = torch.sparse.mm(L, flat)  # (V, B*3)
    return lv.pow(2).sum() / B


def flatten_loss(verts: torch.Tensor, dihedral: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Flatten (dihedral) loss: mean_b sum over interior edges of (cos theta + 1)^2.

    theta is the angle between the two faces' in-plane perpendiculars dropped
    from the edge to the opposite vertices (as in SoftRas/URA): pi (loss 0) for a
    flat pair, 0 (loss 4) for a pair folded onto itself.

    Args:
        verts: (B, V, 3).
        dihedral: (E, 4) long from ``flatten_index``.
    Returns:
        () scalar.
    """
    _check_verts(verts)
    if dihedral.dim() != 2 or dihedral.shape[1] != 4:
        raise ValueError(f"dihedral: expected shape (E, 4), got {tuple(dihedral.shape)}")
    d = dihedral.to(verts.device)
    v0, v1, va, vb = (verts[:, d[:, k]] for k in range(4))  # (B, E, 3) each
    e = v1 - v0
    e2 = (e * e).sum(-1, keepdim=True) + eps

    def perp(p: torch.Tensor) -> torch.Tensor:
        q = p - v0
        return q - e * (q * e).sum(-1, keepdim=True) / e2

    pa, pb = perp(va), perp(vb)
    cos = (pa * pb).sum(-1) / torch.sqrt((pa * pa).sum(-1) * (pb * pb).sum(-1) + eps)
    return (cos + 1.0).pow(2).sum() / verts.shape[0]


# ---------------------------------------------------------------------------
# Normals
# ---------------------------------------------------------------------------


def _batched_faces(faces: torch.Tensor, B: int) -> torch.Tensor:
    if faces.dim() == 2:
        _check_faces(faces)
        return faces.long()[None].expand(B, -1, -1)
    if faces.dim() == 3 and faces.shape[0] == B and faces.shape[2] == 3:
        return faces.long()
    raise ValueError(f"faces: expected (F, 3) or (B={B}, F, 3), got {tuple(faces.shape)}")


def face_vertices(verts: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Gather triangle corners: verts (B, V, C), faces (F, 3) or (B, F, 3) -> (B, F, 3, C)."""
    B, _, C = verts.shape
    f = _batched_faces(faces, B)
    idx = f.reshape(B, -1, 1).expand(-1, -1, C)
    return torch.gather(verts, 1, idx).reshape(B, f.shape[1], 3, C)


def face_normals(verts: torch.Tensor, faces: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Unit face normals cross(v1 - v0, v2 - v0): (B, V, 3), faces (F, 3)|(B, F, 3) -> (B, F, 3)."""
    _check_verts(verts)
    fv = face_vertices(verts, faces)
    n = torch.cross(fv[:, :, 1] - fv[:, :, 0], fv[:, :, 2] - fv[:, :, 0], dim=-1)
    return torch.nn.functional.normalize(n, dim=-1, eps=eps)


def vertex_normals(verts: torch.Tensor, faces: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Area-weighted unit vertex normals: (B, V, 3), faces (F, 3)|(B, F, 3) -> (B, V, 3)."""
    _check_verts(verts)
    B, V, _ = verts.shape
    f = _batched_faces(faces, B)
    fv = face_vertices(verts, f)
    n = torch.cross(fv[:, :, 1] - fv[:, :, 0], fv[:, :, 2] - fv[:, :, 0], dim=-1)  # (B, F, 3)
    out = torch.zeros_like(verts)
    idx = f.reshape(B, -1, 1).expand(-1, -1, 3)  # (B, 3F, 3)
    out = out.scatter_add(1, idx, n.repeat_interleave(3, dim=1))
    return torch.nn.functional.normalize(out, dim=-1, eps=eps)


__all__ = [
    "MeshTopology",
    "face_normals",
    "face_vertices",
    "flatten_index",
    "flatten_loss",
    "icosphere",
    "laplacian_loss",
    "mesh_edges",
    "uniform_laplacian",
    "vertex_normals",
]
