"""Icosphere templates, Laplacian/flatten losses and normals."""

import pytest
import torch

from poseless.geometry.mesh import (
    MeshTopology,
    face_normals,
    flatten_index,
    flatten_loss,
    icosphere,
    laplacian_loss,
    mesh_edges,
    uniform_laplacian,
    vertex_normals,
)

D64 = torch.float64


def _grid(n: int):
    """Planar n x n vertex grid in the xz-plane, two triangles per cell."""
    ys, xs = torch.meshgrid(torch.arange(n, dtype=D64), torch.arange(n, dtype=D64), indexing="ij")
    verts = torch.stack([xs.reshape(-1), torch.zeros(n * n, dtype=D64), ys.reshape(-1)], dim=-1)
    faces = []
    for i in range(n - 1):
        for j in range(n - 1):
            a, b, c, d = i * n + j, i * n + j + 1, (i + 1) * n + j, (i + 1) * n + j + 1
            faces += [(a, c, b), (b, c, d)]
    return verts, torch.tensor(faces)


@pytest.mark.parametrize("level", [0, 1, 2, 3])
def test_icosphere_counts_closed_and_outward(level):
    v, f = icosphere(level, dtype=D64)
    assert v.shape == (10 * 4**level + 2, 3) and f.shape == (20 * 4**level, 3)
    torch.testing.assert_close(v.norm(dim=-1), torch.ones(v.shape[0], dtype=D64))
    edges = mesh_edges(f)
    assert v.shape[0] - edges.shape[0] + f.shape[0] == 2, "Euler characteristic of a sphere"
    # Closed: every undirected edge is shared by exactly two faces.
    assert flatten_index(f).shape[0] == edges.shape[0]
    # Outward: face normals point away from the centre, signed volume positive.
    fv = v[f]
    n = torch.cross(fv[:, 1] - fv[:, 0], fv[:, 2] - fv[:, 0], dim=-1)
    assert ((n * fv.mean(dim=1)).sum(-1) > 0).all()
    assert len(torch.unique(f)) == v.shape[0]


def test_icosphere_level3_is_the_urs_template_and_cached():
    v, f = icosphere(3)
    assert (v.shape[0], f.shape[0]) == (642, 1280)
    v2, f2 = icosphere(3)
    assert torch.equal(v, v2) and torch.equal(f, f2)
    v2[0] = 5.0  # returned tensors are copies; the cache stays intact
    assert icosphere(3)[0][0].norm().item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="level"):
        icosphere(-1)


def test_uniform_laplacian_rows():
    v, f = icosphere(1, dtype=D64)
    L = uniform_laplacian(f, v.shape[0]).to_dense()
    torch.testing.assert_close(L.diagonal(), torch.ones(v.shape[0]))
    torch.testing.assert_close(L.sum(dim=1), torch.zeros(v.shape[0]), atol=1e-6, rtol=0)
    deg = (L < 0).sum(dim=1)
    assert set(deg.tolist()) == {5, 6}
    torch.testing.assert_close(L[L < 0], -1.0 / deg.repeat_interleave(deg).float())


def test_laplacian_of_flat_grid_interior_is_zero_and_loss_matches_dense():
    v, f = _grid(5)
    L = uniform_laplacian(f, v.shape[0])
    lv = torch.sparse.mm(L.to(D64), v)
    interior = [i * 5 + j for i in range(1, 4) for j in range(1, 4)]
    torch.testing.assert_close(lv[interior], torch.zeros(len(interior), 3, dtype=D64))
    batch = v[None] + 0.1 * torch.randn(3, *v.shape, dtype=D64)
    dense = L.to_dense().to(D64)
    expected = sum(((dense @ b) ** 2).sum() for b in batch) / 3
    torch.testing.assert_close(laplacian_loss(batch, L), expected)
    x = batch[:2].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda y: laplacian_loss(y, L), (x,))
    with pytest.raises(ValueError, match="laplacian"):
        laplacian_loss(batch[:, :10], L)


def _fan(lift: float):
    """A hexagonal fan around a centre vertex; ``lift`` raises every other rim vertex."""
    import math

    rim = [(math.cos(k * math.pi / 3), lift * (k % 2), math.sin(k * math.pi / 3)) for k in range(6)]
    v = torch.tensor([(0.0, 0.0, 0.0), *rim], dtype=D64)
    f = torch.tensor([(0, 1 + (k + 1) % 6, 1 + k) for k in range(6)])
    return v, f


def test_flatten_index_and_loss_on_fans():
    v, f = _fan(0.0)
    idx = flatten_index(f)
    assert idx.shape == (6, 4), "six interior spokes"
    for v0, v1, a, b in idx.tolist():
        assert 0 in (v0, v1) and a != b and {a, b}.isdisjoint({v0, v1})
    flat = flatten_loss(v[None], idx)
    assert flat.item() < 1e-10
    folded = flatten_loss(_fan(0.8)[0][None], idx)
    more = flatten_loss(_fan(3.0)[0][None], idx)
    assert 1e-3 < folded.item() < more.item(), (folded, more)
    # A pair folded onto itself: cos = +1 -> (1 + 1)^2 = 4 per edge.
    v2 = torch.tensor([(0, 0, 0), (1, 0, 0), (0.5, 1, 0), (0.5, 1, 1e-3)], dtype=D64)
    f2 = torch.tensor([(0, 1, 2), (1, 0, 3)])
    assert flatten_loss(v2[None], flatten_index(f2)).item() == pytest.approx(4.0, rel=1e-3)


def test_flatten_loss_gradients_and_batch_mean():
    v, f = icosphere(1, dtype=D64)
    topo = MeshTopology.from_faces(f, v.shape[0])
    g = torch.Generator().manual_seed(0)
    x = (v[None] * (1 + 0.1 * torch.rand(2, v.shape[0], 1, generator=g, dtype=D64))).requires_grad_(
        True
    )
    assert torch.autograd.gradcheck(lambda y: flatten_loss(y, topo.dihedral), (x,))
    both = flatten_loss(x, topo.dihedral)
    each = [flatten_loss(x[i : i + 1], topo.dihedral) for i in range(2)]
    torch.testing.assert_close(both, (each[0] + each[1]) / 2)
    with pytest.raises(ValueError, match="dihedral"):
        flatten_loss(x, topo.dihedral[:, :3])


def test_normals():
    v, f = icosphere(3, dtype=D64)
    fn = face_normals(v[None], f)[0]
    centres = torch.nn.functional.normalize(v[f].mean(dim=1), dim=-1)
    assert ((fn * centres).sum(-1) > 0.999).all()
    vn = vertex_normals(v[None].expand(2, -1, -1), f)
    assert vn.shape == (2, 642, 3)
    assert ((vn * v).sum(-1) > 0.9999).all()
    tri = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0, 1, 0]]], dtype=D64)
    torch.testing.assert_close(
        face_normals(tri, torch.tensor([[0, 1, 2]]))[0, 0], torch.tensor([0.0, 0, 1], dtype=D64)
    )
    torch.testing.assert_close(
        vertex_normals(tri, torch.tensor([[0, 1, 2]]))[0],
        torch.tensor([[0.0, 0, 1]] * 3, dtype=D64),
    )


def test_topology_and_bad_inputs():
    topo = MeshTopology.icosphere(2)
    assert topo.num_vertices == 162 and topo.faces.shape == (320, 3)
    assert topo.dihedral.shape == (480, 4) and topo.laplacian.shape == (162, 162)
    with pytest.raises(ValueError, match="out of range"):
        MeshTopology.from_faces(torch.tensor([[0, 1, 7]]), 3)
    with pytest.raises(ValueError, match=r"\(F, 3\)"):
        mesh_edges(torch.zeros(4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(B, V, 3\)"):
        face_normals(torch.zeros(3, 3), torch.tensor([[0, 1, 2]]))
