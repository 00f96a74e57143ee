"""SoftRas soft rasterizer: dense reference, gradients, ray-cast masks, inverse rendering."""

import math

import numpy as np
import pytest
import torch
import trimesh

from poseless.geometry.cameras import (
    camera_rays,
    kato_extrinsics,
    pixel_centers_ndc,
    world_to_camera,
)
from poseless.geometry.mesh import MeshTopology, flatten_loss, icosphere, laplacian_loss
from poseless.render.soft_raster import (
    SoftRasterSettings,
    face_windows,
    find_candidates,
    gather_faces,
    project_vertices,
    render_silhouettes,
    render_silhouettes_dense,
    render_soft,
)

D64 = torch.float64


@pytest.fixture(autouse=True)
def _one_thread():
    # Many small ops: on the shared 2-core CI machine one thread is faster and steadier.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _reference_silhouettes(verts, faces, R, t, s: SoftRasterSettings):
    """Slow, obvious SoftRas silhouettes: loop over faces, barycentric inside test."""
    B = verts.shape[0]
    S = s.image_size
    tan = math.tan(math.radians(s.fov_deg) / 2)
    cam = world_to_camera(verts, R, t)
    ndc = cam[..., :2] / (cam[..., 2:] * tan)
    pix = pixel_centers_ndc(S, S, dtype=verts.dtype).reshape(-1, 2)
    out = []
    for b in range(B):
        log_keep = torch.zeros(S * S, dtype=verts.dtype)
        for f in faces.tolist():
            if (cam[b, f, 2] < s.near).any():
                continue
            a, bb, c = ndc[b, f[0]], ndc[b, f[1]], ndc[b, f[2]]
            # Barycentric coordinates by solving p = a + u (b - a) + v (c - a).
            m = torch.stack([bb - a, c - a], dim=1)
            uv = torch.linalg.solve(m, (pix - a).T).T
            inside = (uv[:, 0] > 0) & (uv[:, 1] > 0) & (uv.sum(1) < 1)
            d2 = []
            for p0, p1 in ((a, bb), (bb, c), (c, a)):
                e = p1 - p0
                w = ((pix - p0) @ e / (e @ e)).clamp(0, 1)
                d2.append(((pix - p0 - w[:, None] * e) ** 2).sum(1))
            d2 = torch.stack(d2).min(0).values
            D = torch.sigmoid(torch.where(inside, d2, -d2) / s.sigma)
            log_keep = log_keep + torch.log1p(-D)
        out.append(1 - torch.exp(log_keep))
    return torch.stack(out).reshape(B, 1, S, S)


def _random_mesh(seed: int, B: int = 2, level: int = 1):
    g = torch.Generator().manual_seed(seed)
    v, f = icosphere(level, dtype=D64)
    verts = 0.5 * v[None] * (1 + 0.3 * torch.rand(B, v.shape[0], 1, generator=g, dtype=D64))
    verts = verts + 0.1 * torch.randn(B, 1, 3, generator=g, dtype=D64)
    az = torch.rand(B, generator=g, dtype=D64) * 2 * math.pi
    el = (torch.rand(B, generator=g, dtype=D64) - 0.5) * 1.5
    R, t = kato_extrinsics(az, el, 2.732)
    return verts, f, R, t


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_slow_reference_values_and_gradients(seed):
    s = SoftRasterSettings(image_size=16, sigma=1e-3, prob_cutoff=1e-12)
    verts, f, R, t = _random_mesh(seed)
    verts = verts.requires_grad_(True)
    ref = _reference_silhouettes(verts, f, R, t, s)
    fast = render_silhouettes(verts, f, R, t, s)
    assert fast.shape == (2, 1, 16, 16)
    torch.testing.assert_close(fast, ref, atol=1e-9, rtol=0)
    w = torch.randn_like(ref)
    g_ref = torch.autograd.grad((ref * w).sum(), verts)[0]
    g_fast = torch.autograd.grad((fast * w).sum(), verts)[0]
    torch.testing.assert_close(g_fast, g_ref, atol=1e-6 * g_ref.abs().max().item(), rtol=1e-6)


def test_default_cutoff_is_close_to_dense_and_cheap():
    s = SoftRasterSettings(image_size=32)
    verts, f, R, t = _random_mesh(3, B=2, level=2)
    fast = render_silhouettes(verts, f, R, t, s)
    dense = render_silhouettes_dense(verts, f, R, t, s)
    # Coverage below prob_cutoff = 1e-5 is dropped per face.
    torch.testing.assert_close(fast, dense, atol=1e-4, rtol=0)
    ndc, z = project_vertices(verts, R, t, s.tan_half_fov)
    fb = f[None].expand(2, -1, -1)
    windows = face_windows(gather_faces(ndc, fb), gather_faces(z[..., None], fb)[..., 0], s)
    pairs = find_candidates(windows).face.numel()
    assert pairs < 0.1 * 2 * f.shape[0] * 32 * 32, f"{pairs} pairs is not sparse"


def test_gradcheck_vertices_and_camera():
    s = SoftRasterSettings(image_size=6, sigma=2e-2, near=0.5)
    verts = torch.tensor(
        [[[-0.3, -0.2, 0.05], [0.35, -0.25, -0.1], [0.05, 0.4, 0.0], [0.4, 0.3, 0.2]]], dtype=D64
    )
    faces = torch.tensor([[0, 1, 2], [1, 3, 2]])
    R, t = kato_extrinsics(torch.tensor([0.3], dtype=D64), torch.tensor([0.2], dtype=D64), 2.0)
    fn = lambda v, R_, t_: render_silhouettes(v, faces, R_, t_, s)  # noqa: E731
    assert torch.autograd.gradcheck(
        fn, (verts.requires_grad_(True), R.requires_grad_(True), t.requires_grad_(True))
    )


def test_batch_broadcasting_and_per_batch_faces():
    s = SoftRasterSettings(image_size=16, sigma=1e-3)
    verts, f, R, t = _random_mesh(4, B=3)
    one = render_silhouettes(verts[:1], f, R, t, s)  # one mesh, three cameras
    for b in range(3):
        torch.testing.assert_close(
            one[b : b + 1], render_silhouettes(verts[:1], f, R[b : b + 1], t[b : b + 1], s)
        )
    per_batch = render_silhouettes(verts, f[None].expand(3, -1, -1), R, t, s)
    torch.testing.assert_close(per_batch, render_silhouettes(verts, f, R, t, s))


def test_faces_behind_the_near_plane_are_ignored():
    s = SoftRasterSettings(image_size=16, sigma=1e-3)
    R, t = kato_extrinsics(torch.tensor([0.0]), torch.tensor([0.0]), 2.0)
    # A triangle straddling the camera (z_cam from 0.2 to 2.5): in front of the near plane.
    verts = torch.tensor([[[0.0, 0.0, 0.5], [0.2, 0.0, -1.8], [0.0, 0.2, -1.8], [0.1, 0.1, 0.0]]])
    faces = torch.tensor([[0, 1, 2]])
    assert render_silhouettes(verts, faces, R, t, s).max().item() == 0.0
    assert render_silhouettes_dense(verts, faces, R, t, s).max().item() == 0.0
    shifted = verts.clone()
    shifted[..., 2] += 1.0
    assert render_silhouettes(shifted, faces, R, t, s).max().item() > 0.5


def _raycast_masks(mesh: trimesh.Trimesh, R, t, s: SoftRasterSettings) -> np.ndarray:
    ndc = pixel_centers_ndc(s.image_size, s.image_size, dtype=D64).reshape(-1, 2)
    o, d = camera_rays(R.to(D64), t.to(D64), s.tan_half_fov, ndc)
    hit = trimesh.ray.ray_pyembree.RayMeshIntersector(mesh).intersects_any(
        o.reshape(-1, 3).numpy(), d.reshape(-1, 3).numpy()
    )
    return hit.reshape(R.shape[0], s.image_size, s.image_size)


@pytest.mark.parametrize("category", ["chair", "car", "airplane"])
def test_small_sigma_silhouette_matches_raycast_mask(category):
    synthetic = pytest.importorskip("poseless.data.synthetic")
    mesh = synthetic.make_shape(category, np.random.default_rng(7)).mesh
    s = SoftRasterSettings(image_size=64, sigma=1e-6)
    R, t = kato_extrinsics(torch.tensor([0.4, 2.0, 4.0]), torch.tensor([0.5, 0.1, -0.3]))
    verts = torch.tensor(mesh.vertices, dtype=torch.float32)[None]
    soft = render_silhouettes(verts, torch.tensor(mesh.faces), R, t, s)[:, 0].numpy() > 0.5
    hard = _raycast_masks(mesh, R, t, s)
    iou = (soft & hard).sum() / (soft | hard).sum()
    assert iou >= 0.98, f"{category}: IoU {iou:.4f} against the ray-cast mask"


@pytest.mark.parametrize("mode", ["soft", "hard"])
def test_constant_attribute_is_reproduced_inside_the_mask(mode):
    s = SoftRasterSettings(image_size=32)
    verts, f, R, t = _random_mesh(5, B=2, level=2)
    attrs = torch.tensor([0.25, -0.5, 2.0], dtype=D64).expand(2, verts.shape[1], 3)
    out = render_soft(verts, f, R, t, attrs, s, mode=mode)
    assert out.image.shape == (2, 3, 32, 32) and out.depth.shape == (2, 1, 32, 32)
    mask = (out.alpha > 0.5).expand_as(out.image)
    assert mask.any()
    torch.testing.assert_close(
        out.image[mask], attrs[0, 0].reshape(1, 3, 1, 1).expand_as(out.image)[mask]
    )
    cam_dist = 2.732
    depth = out.depth[out.alpha > 0.5]
    assert ((depth > cam_dist - 0.9) & (depth < cam_dist + 0.3)).all(), "front surface depth"
    if mode == "hard":
        torch.testing.assert_close(out.image[~mask], torch.zeros_like(out.image[~mask]))
        assert set(out.alpha.unique().tolist()) <= {0.0, 1.0}
    else:
        torch.testing.assert_close(out.alpha, render_silhouettes(verts, f, R, t, s))


def test_soft_and_hard_attribute_images_agree_and_have_gradients():
    s = SoftRasterSettings(image_size=32)
    verts, f, R, t = _random_mesh(6, B=1, level=2)
    verts = verts.requires_grad_(True)
    colours = verts.detach() + 0.5  # position-coded colours
    soft = render_soft(verts, f, R, t, colours, s, mode="soft")
    hard = render_soft(verts, f, R, t, colours, s, mode="hard")
    both = (hard.alpha > 0.5) & (soft.alpha > 0.99)
    diff = (soft.image - hard.image).abs().amax(dim=1, keepdim=True)[both]
    assert diff.median() < 1e-3, "soft aggregation with small gamma is the front-most surface"
    (soft.image.sum() + soft.depth.sum()).backward()
    assert torch.isfinite(verts.grad).all() and verts.grad.abs().sum() > 0


def test_inverse_rendering_recovers_a_box():
    # Silhouettes from 8 views (mixed elevations so the visual hull is tight).
    target = trimesh.creation.box(extents=(0.8, 0.45, 0.6))
    s = SoftRasterSettings(image_size=32)
    els = [40.0, -40.0, 0.0, 70.0]
    az = torch.arange(8) * (2 * math.pi / 8) + 0.3
    el = torch.tensor([math.radians(els[k % 4]) for k in range(8)])
    R, t = kato_extrinsics(az, el)
    masks = torch.tensor(_raycast_masks(target, R, t, s), dtype=torch.float32)[:, None]
    v, f = icosphere(2)
    topo = MeshTopology.from_faces(f, v.shape[0])
    offsets = torch.zeros(1, v.shape[0], 3, requires_grad=True)
    opt = torch.optim.Adam([offsets], lr=0.01)
    for _ in range(100):
        verts = 0.4 * v[None] + offsets
        alpha = render_silhouettes(verts, f, R, t, s)
        inter = (alpha * masks).sum(dim=(1, 2, 3))
        iou = inter / (alpha + masks - alpha * masks).sum(dim=(1, 2, 3)).clamp_min(1e-6)
        loss = 1 - iou.mean() + 0.03 * laplacian_loss(verts, topo.laplacian)
        loss = loss + 3e-4 * flatten_loss(verts, topo.dihedral)
        opt.zero_grad()
        loss.backward()
        opt.step()
    pred = trimesh.Trimesh((0.4 * v[None] + offsets)[0].detach().numpy(), f.numpy(), process=False)
    g = (np.arange(32) + 0.5) / 32 - 0.5
    cells = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    a, b = pred.contains(cells), target.contains(cells)
    viou = (a & b).sum() / (a | b).sum()
    assert viou >= 0.8, f"voxel IoU {viou:.3f} after fitting silhouettes"


def test_bad_inputs():
    verts, f, R, t = _random_mesh(0, B=2)
    with pytest.raises(ValueError, match="vertices"):
        render_silhouettes(verts[0], f, R, t)
    with pytest.raises(ValueError, match="R"):
        render_silhouettes(verts, f, R[:, :2], t)
    with pytest.raises(ValueError, match="faces"):
        render_silhouettes(verts, f.float(), R, t)
    with pytest.raises(ValueError, match="faces"):
        render_silhouettes(verts, f + 1000, R, t)
    with pytest.raises(ValueError, match="broadcast"):
        render_silhouettes(verts, f, torch.cat([R, R[:1]]), torch.cat([t, t[:1]]))
    with pytest.raises(ValueError, match="attributes"):
        render_soft(verts, f, R, t, torch.zeros(2, 5, 3, dtype=D64))
    with pytest.raises(ValueError, match="mode"):
        render_soft(verts, f, R, t, verts, mode="blurry")
    with pytest.raises(ValueError, match="sigma"):
        SoftRasterSettings(sigma=0.0)


def test_empty_view_renders_zeros():
    verts, f, R, t = _random_mesh(0, B=1)
    far_away = verts + torch.tensor([50.0, 0.0, 0.0], dtype=D64)
    out = render_silhouettes(far_away.requires_grad_(True), f, R, t)
    assert out.abs().max().item() == 0.0
    out.sum().backward()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    s = SoftRasterSettings(image_size=32, sigma=1e-3)
    verts, f, R, t = _random_mesh(8, B=2, level=2)
    verts = verts.float().requires_grad_(True)
    cpu = render_silhouettes(verts, f, R.float(), t.float(), s)
    (g_cpu,) = torch.autograd.grad(cpu.sum(), verts)
    vc = verts.detach().cuda().requires_grad_(True)
    gpu = render_silhouettes(vc, f.cuda(), R.float().cuda(), t.float().cuda(), s)
    (g_gpu,) = torch.autograd.grad(gpu.sum(), vc)
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-5, rtol=0)
    torch.testing.assert_close(g_gpu.cpu(), g_cpu, atol=1e-3, rtol=1e-3)
