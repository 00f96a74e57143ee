"""How sharp can the SDF volume renderer draw a silhouette at a given Laplace scale beta?

VolSDF's density sigma = (1 / beta) * Psi_beta(-sdf) has tails outside the
surface, so a surface seen at grazing distance already adds opacity, and thin parts
and silhouette edges are blurred over a few beta. This script measures both on
analytic SDFs with the library's renderer (``poseless.render.volume.render_rays``):

* ``slab``: opacity of a face-on slab of each ``--thickness`` (a chair leg, a wing);
* ``edge``: the 10 %-90 % opacity transition across a sphere's silhouette edge, in
  world units and in pixels of the camera (``--size``, ``--fov-deg``, ``--distance``).

Renders with ``--n-samples`` stratified samples per ray (averaged over
``--repeats`` jitters), as training does, and with 1024 deterministic samples, the
beta-only limit. The defaults are ``config/bench.yaml``'s camera and sampling.

    python benchmarks/sdf_beta_opacity.py
    python benchmarks/sdf_beta_opacity.py --betas 0.1 0.03 --n-samples 64
"""

from __future__ import annotations

import argparse
import json
import math

import torch

from poseless.render.volume import VolumeRenderSettings, ray_bounds, render_rays


def opacity(sdf_fn, origins, dirs, beta: float, n_samples: int, repeats: int, margin: float):
    """Mean rendered opacity per ray, (R,), over ``repeats`` stratified jitters (1 if no jitter)."""
    settings = VolumeRenderSettings(n_samples=n_samples, bound_margin=margin)
    near, far = ray_bounds(origins, settings)
    training = repeats > 1
    g = torch.Generator().manual_seed(0)
    acc = torch.zeros(origins.shape[1], dtype=torch.float64)

    def field(p):
        return sdf_fn(p), p.new_zeros(*p.shape[:-1], 1)

    for _ in range(repeats):
        out = render_rays(
            field,
            origins,
            dirs,
            near,
            far,
            beta,
            settings,
            training,
            generator=g,
            compute_normals=False,
        )
        acc += out.mask[0].double()
    return acc / repeats


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--betas", type=float, nargs="+", default=[0.1, 0.076, 0.05, 0.03, 0.01])
    parser.add_argument("--thickness", type=float, nargs="+", default=[0.0, 0.03, 0.05, 0.1])
    parser.add_argument("--n-samples", type=int, default=32, help="samples per ray (bench: 32)")
    parser.add_argument("--repeats", type=int, default=64, help="stratified jitters averaged")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--fov-deg", type=float, default=30.0)
    parser.add_argument("--distance", type=float, default=2.732)
    parser.add_argument("--margin", type=float, default=0.9, help="near/far = distance -/+ this")
    args = parser.parse_args(argv)

    px_per_unit = args.size / (2 * args.distance * math.tan(math.radians(args.fov_deg) / 2))
    eye = torch.tensor([0.0, 0.0, args.distance])
    results = []
    for n, reps in ((args.n_samples, args.repeats), (1024, 1)):
        for beta in args.betas:
            row = {"sampling": f"{n} samples" + (" jittered" if reps > 1 else ""), "beta": beta}
            # Face-on slabs |z| <= t / 2: one ray down the z axis per thickness.
            for t in args.thickness:
                o, d = eye.view(1, 1, 3), torch.tensor([[[0.0, 0.0, -1.0]]])
                a = opacity(
                    lambda p, t=t: p[..., 2].abs() - t / 2, o, d, beta, n, reps, args.margin
                )
                row[f"slab_{t:g}"] = round(float(a[0]), 3)
            # A sphere of radius 0.3: parallel rays at offsets rho across its edge.
            rho = torch.linspace(0.0, 0.6, 601)
            o = torch.stack([rho, torch.zeros_like(rho), torch.full_like(rho, args.distance)], -1)
            d = torch.tensor([0.0, 0.0, -1.0]).expand_as(o)
            a = opacity(
                lambda p: p.norm(dim=-1) - 0.3,
                o[None],
                d[None].contiguous(),
                beta,
                n,
                reps,
                args.margin,
            )
            inner = rho[a >= 0.9].max() if bool((a >= 0.9).any()) else rho[0]
            outer = rho[a >= 0.1].max() if bool((a >= 0.1).any()) else rho[0]
            width = float(outer - inner)
            row["edge_10_90_units"] = round(width, 4)
            row["edge_10_90_px"] = round(width * px_per_unit, 2)
            results.append(row)
            print(json.dumps(row))
    print(json.dumps({"px_per_unit": round(px_per_unit, 2), "n": len(results)}))


if __name__ == "__main__":
    main()
