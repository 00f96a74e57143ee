"""ShapeClipper's conditional SDF and colour fields.

Both MLPs read the positional encoding of a point. With ``symmetric`` on, the
point is first folded onto x >= 0 (x -> |x|), so the field is exactly
mirror-symmetric about the plane x = 0 of our y-up world frame (a category's
left-right plane; its front faces -z, see ``poseless.geometry.cameras``).

SDF MLP (defaults = ShapeClipper): input [PE(|x|, y, z) (39), shape code (64)]
= 103 dims; five hidden layers of 64 with Softplus(beta = 100); before hidden
layers 1 and 2 the input is concatenated again and the concatenation divided
by sqrt(2); output 1 SDF value + 64 features. Geometric initialisation (IDR/SAL
style, adapted to the skips and the PE, then a closed-form refit of the SDF
output row) makes the untrained field the SDF of a sphere of radius
``init_radius`` to about 0.01: ||x|| - r, with ||grad|| = 1 +/- 0.03.

Colour MLP: [PE (39), colour code (64), SDF features (64)] -> 64 -> 64 -> 64
-> 3, ReLU, sigmoid.

The per-batch codes enter every layer that reads them as a per-batch bias
(``W_code @ code`` computed once per shape, not once per point): the same
function as concatenating the code to every point, at a fraction of the cost.

:meth:`SDFNetwork.with_gradient` returns the SDF, the features and grad sdf
together, the gradient written out as differentiable ops (no double backward);
``SDFField.sdf_fn`` returns a :class:`BoundSDF` that offers it to the volume
renderer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass(frozen=True)
class SDFFieldSettings:
    """Architecture of the SDF and colour MLPs (defaults: ShapeClipper)."""

    hidden_width: int = 64
    """Width of the SDF MLP's hidden layers."""
    n_hidden_layers: int = 5
    """Number of hidden layers of the SDF MLP."""
    n_frequencies: int = 6
    """Positional-encoding frequencies 2^0 ... 2^(n-1); 0 disables the PE (raw xyz)."""
    skip_layers: tuple[int, ...] = (1, 2)
    """Hidden layers (0-based, 1 <= l < n_hidden_layers) that also read the input, scaled by 1/sqrt(2)."""
    symmetric: bool = True
    """Fold x -> |x| before encoding: the fields are symmetric about the plane x = 0."""
    shape_code_dim: int = 64
    """Dimension of the shape code the SDF MLP is conditioned on (0: unconditional)."""
    feature_dim: int = 64
    """Number of SDF features passed to the colour MLP."""
    softplus_beta: float = 100.0
    """Sharpness of the SDF MLP's Softplus activations."""
    geometric_init: bool = True
    """Initialise the SDF MLP to approximately ||x|| - init_radius."""
    init_radius: float = 0.5
    """Radius of the sphere the geometric initialisation produces."""
    init_fit_points: int = 8192
    """After the IDR init, refit the SDF output row by ridge least squares to ||x|| - r on
    this many points uniform in [-1, 1]^3 (0: plain IDR init, error ~0.1 at width 64)."""
    color_hidden_width: int = 64
    """Width of the colour MLP's hidden layers."""
    color_hidden_layers: int = 3
    """Number of hidden layers of the colour MLP."""
    color_code_dim: int = 64
    """Dimension of the colour code the colour MLP is conditioned on (0: unconditional)."""

    def __post_init__(self) -> None:
        positive = {
            "hidden_width": self.hidden_width,
            "n_hidden_layers": self.n_hidden_layers,
            "color_hidden_width": self.color_hidden_width,
            "color_hidden_layers": self.color_hidden_layers,
        }
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"SDFFieldSettings.{name} must be >= 1, got {value}")
        non_negative = {
            "n_frequencies": self.n_frequencies,
            "shape_code_dim": self.shape_code_dim,
            "feature_dim": self.feature_dim,
            "color_code_dim": self.color_code_dim,
            "init_fit_points": self.init_fit_points,
        }
        for name, value in non_negative.items():
            if value < 0:
                raise ValueError(f"SDFFieldSettings.{name} must be >= 0, got {value}")
        for layer in self.skip_layers:
            if not 1 <= layer < self.n_hidden_layers:
                raise ValueError(
                    f"SDFFieldSettings.skip_layers: {layer} is not a hidden layer in "
                    f"[1, {self.n_hidden_layers - 1}]"
                )
        if self.softplus_beta <= 0 or self.init_radius <= 0:
            raise ValueError("SDFFieldSettings: softplus_beta and init_radius must be > 0")

    @property
    def encoding_dim(self) -> int:
        """Width of the positional encoding: 3 + 6 * n_frequencies (39 by default)."""
        return encoding_dim(self.n_frequencies)


def encoding_dim(n_frequencies: int) -> int:
    """Width of ``positional_encoding`` output: xyz plus sin and cos per frequency."""
    return 3 + 6 * n_frequencies


def positional_encoding(x: torch.Tensor, n_frequencies: int) -> torch.Tensor:
    """NeRF positional encoding.

    Args:
        x: (..., 3) points.
        n_frequencies: F; frequencies 2^0 ... 2^(F-1).
    Returns:
        (..., 3 + 6F): [x, sin(2^0 x), cos(2^0 x), ..., sin(2^(F-1) x), cos(2^(F-1) x)],
        each block 3 wide (the first 3 columns are x itself).
    """
    if x.shape[-1] != 3:
        raise ValueError(f"positional_encoding: x must end in 3 coordinates, got {tuple(x.shape)}")
    if n_frequencies == 0:
        return x
    freqs = 2.0 ** torch.arange(n_frequencies, device=x.device, dtype=x.dtype)  # (F,)
    scaled = x[..., None, :] * freqs[:, None]  # (..., F, 3)
    sincos = torch.stack([torch.sin(scaled), torch.cos(scaled)], dim=-2)  # (..., F, 2, 3)
    return torch.cat([x, sincos.flatten(-3)], dim=-1)


def _encoding_parts(
    x: torch.Tensor, n_frequencies: int
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """``positional_encoding`` plus its sin and cos blocks (..., F, 3) (None when F = 0)."""
    if n_frequencies == 0:
        return x, None, None
    freqs = 2.0 ** torch.arange(n_frequencies, device=x.device, dtype=x.dtype)
    scaled = x[..., None, :] * freqs[:, None]  # (..., F, 3)
    sin, cos = torch.sin(scaled), torch.cos(scaled)
    pe = torch.cat([x, torch.stack([sin, cos], dim=-2).flatten(-3)], dim=-1)
    return pe, sin, cos


def _encoding_backward(
    g_pe: torch.Tensor, sin: torch.Tensor | None, cos: torch.Tensor | None, n_frequencies: int
) -> torch.Tensor:
    """Chain rule through the positional encoding.

    Args:
        g_pe: (..., 3 + 6F) d f / d PE(x); sin, cos: (..., F, 3) from ``_encoding_parts``.
    Returns:
        (..., 3) d f / d x = g_x + sum_k 2^k (g_sin_k cos(2^k x) - g_cos_k sin(2^k x)).
    """
    if n_frequencies == 0:
        return g_pe
    freqs = 2.0 ** torch.arange(n_frequencies, device=g_pe.device, dtype=g_pe.dtype)
    g_sc = g_pe[..., 3:].unflatten(-1, (n_frequencies, 2, 3))  # (..., F, 2, 3)
    per_freq = g_sc[..., 0, :] * cos - g_sc[..., 1, :] * sin  # (..., F, 3)
    return g_pe[..., :3] + (per_freq * freqs[:, None]).sum(dim=-2)


class _SoftplusWithSlope(torch.autograd.Function):
    """(z, beta) -> (softplus_beta(z), sigmoid(beta z)); saves only the slope."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
        slope = (z * beta).sigmoid_()
        ctx.save_for_backward(slope)
        ctx.beta = beta
        # softplus(z) = relu(z) + log(1 + exp(-beta |z|)) / beta
        #             = relu(z) - log(sigmoid(beta |z|)) / beta, sigmoid(beta |z|) = max(s, 1 - s).
        # Same values as F.softplus to float rounding, ~3x cheaper on CPU (torch's
        # softplus/log1p kernels are not vectorised there).
        tail = torch.maximum(slope, torch.rsub(slope, 1.0)).log_()
        return torch.relu(z).sub_(tail, alpha=1.0 / beta), slope

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_h: torch.Tensor | None, grad_slope: torch.Tensor | None):
        (slope,) = ctx.saved_tensors
        if grad_slope is None:
            return (None if grad_h is None else grad_h * slope), None
        # d slope / dz = beta slope (1 - slope):
        # grad_z = slope * (grad_h + beta * grad_slope * (1 - slope)), one buffer, in place.
        grad_z = torch.rsub(slope, 1.0).mul_(grad_slope).mul_(ctx.beta)
        if grad_h is not None:
            grad_z.add_(grad_h)
        return grad_z.mul_(slope), None


def softplus_with_slope(z: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Softplus(beta) and its derivative in one op.

    Args:
        z: (...) pre-activations; beta: sharpness (> 0).
    Returns:
        h = log(1 + exp(beta z)) / beta (as ``F.softplus``, to float rounding) and
        slope = dh/dz = sigmoid(beta z), both (...); differentiable (first order) in z.
    """
    return _SoftplusWithSlope.apply(z, beta)


def fold_symmetric(points: torch.Tensor) -> torch.Tensor:
    """(..., 3) points -> (|x|, y, z): the structural mirror symmetry about x = 0."""
    return torch.cat([points[..., :1].abs(), points[..., 1:]], dim=-1)


def _check_points_and_code(
    name: str, points: torch.Tensor, code: torch.Tensor | None, code_dim: int
) -> None:
    if points.dim() != 3 or points.shape[-1] != 3:
        raise ValueError(f"{name}: points must be (B, N, 3), got {tuple(points.shape)}")
    if code_dim == 0:
        if code is not None and code.numel() > 0:
            raise ValueError(f"{name}: built without a code (code dim 0) but got a code")
        return
    if code is None or code.dim() != 2 or code.shape != (points.shape[0], code_dim):
        got = None if code is None else tuple(code.shape)
        raise ValueError(f"{name}: code must be (B={points.shape[0]}, {code_dim}), got {got}")


class SDFNetwork(nn.Module):
    """The conditional SDF MLP: (points, shape code) -> (sdf, features)."""

    def __init__(self, settings: SDFFieldSettings | None = None):
        super().__init__()
        self.settings = s = settings or SDFFieldSettings()
        self.pe_dim = s.encoding_dim
        self.input_dim = self.pe_dim + s.shape_code_dim
        self.skips = frozenset(s.skip_layers)
        dims_out = [s.hidden_width] * s.n_hidden_layers + [1 + s.feature_dim]
        layers = []
        in_dim = self.input_dim
        for index, out_dim in enumerate(dims_out):
            if index in self.skips:
                in_dim += self.input_dim
            layers.append(nn.Linear(in_dim, out_dim))
            in_dim = out_dim
        self.layers = nn.ModuleList(layers)
        self.activation = nn.Softplus(beta=s.softplus_beta)
        if s.geometric_init:
            self.geometric_init_()

    @torch.no_grad()
    def geometric_init_(self) -> None:
        """IDR/SAL initialisation to approximately ||x|| - init_radius.

        Hidden layers get N(0, 2/out) weights and zero bias, but every weight that
        reads the PE's sin/cos columns or the code is zeroed (only raw xyz and the
        previous layer feed the field at init); the last layer gets weights
        sqrt(pi)/sqrt(in) (std 1e-4) and bias -init_radius. Then, unless
        ``init_fit_points`` is 0, the SDF row is refitted (see ``_fit_sdf_row_to_sphere``).
        """
        s = self.settings
        last = len(self.layers) - 1
        for index, layer in enumerate(self.layers):
            in_dim, out_dim = layer.in_features, layer.out_features
            if index == last:
                nn.init.normal_(layer.weight, mean=math.sqrt(math.pi) / math.sqrt(in_dim), std=1e-4)
                nn.init.constant_(layer.bias, -s.init_radius)
                continue
            nn.init.normal_(layer.weight, 0.0, math.sqrt(2.0) / math.sqrt(out_dim))
            nn.init.zeros_(layer.bias)
            # Zero the columns that read [PE without xyz, code] (layer 0 and skips).
            if index == 0:
                layer.weight[:, 3:].zero_()
            elif index in self.skips:
                layer.weight[:, in_dim - self.input_dim + 3 :].zero_()
        if s.init_fit_points > 0:
            self._fit_sdf_row_to_sphere(s.init_fit_points)

    @torch.no_grad()
    def _fit_sdf_row_to_sphere(self, n_points: int) -> None:
        """Ridge least squares of the SDF output row on the random hidden features.

        The IDR init is exact only in expectation over the random weights; with
        64 units one draw is off by ~0.1 and its gradient norm by ~20 %. Refitting
        the last layer's SDF weights and bias (features untouched, code ignored:
        it has no effect at init) brings it to ~0.01 and ||grad|| to 1 +/- 0.03.
        """
        s = self.settings
        last = self.layers[-1]
        points = torch.rand(1, n_points, 3, device=last.weight.device) * 2.0 - 1.0
        code = points.new_zeros(1, s.shape_code_dim) if s.shape_code_dim else None
        hidden = self.trunk(points, code)[0]  # (n, W)
        design = torch.cat([hidden, torch.ones_like(hidden[:, :1])], dim=1)  # (n, W + 1)
        target = points[0].norm(dim=-1) - s.init_radius  # (n,)
        ridge = 1e-5 * n_points * torch.eye(design.shape[1], device=design.device)
        solution = torch.linalg.solve(design.T @ design + ridge, design.T @ target)
        last.weight[0] = solution[:-1]
        last.bias[0] = solution[-1]

    def _input_part(
        self, layer: nn.Linear, start: int, pe: torch.Tensor, code: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The layer's response to the input block at columns ``start:``.

        Returns (per-point term (B, N, out), per-batch term (B, 1, out)).
        """
        w = layer.weight
        per_point = F.linear(pe, w[:, start : start + self.pe_dim])
        if code is None:
            per_batch = per_point.new_zeros(1, 1, w.shape[0])
        else:
            per_batch = F.linear(code, w[:, start + self.pe_dim :])[:, None, :]
        return per_point, per_batch

    def trunk(self, points: torch.Tensor, code: torch.Tensor | None = None) -> torch.Tensor:
        """Activations of the last hidden layer.

        Args:
            points: (B, N, 3); code: (B, shape_code_dim) or None when shape_code_dim = 0.
        Returns:
            (B, N, hidden_width).
        """
        s = self.settings
        _check_points_and_code("SDFNetwork", points, code, s.shape_code_dim)
        if s.shape_code_dim == 0:
            code = None
        x_in = fold_symmetric(points) if s.symmetric else points
        pe = positional_encoding(x_in, s.n_frequencies)  # (B, N, P)
        inv_sqrt2 = 1.0 / math.sqrt(2.0)
        h = pe
        for index, layer in enumerate(self.layers[:-1]):
            if index == 0:
                point_term, batch_term = self._input_part(layer, 0, pe, code)
                z = point_term + (batch_term + layer.bias)
            elif index in self.skips:
                width = layer.in_features - self.input_dim
                point_term, batch_term = self._input_part(layer, width, pe, code)
                z = F.linear(h, layer.weight[:, :width]) + point_term
                z = z * inv_sqrt2 + (batch_term * inv_sqrt2 + layer.bias)
            else:
                z = F.linear(h, layer.weight, layer.bias)
            h = self.activation(z)
        return h

    def forward(
        self, points: torch.Tensor, code: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Evaluate the field.

        Args:
            points: (B, N, 3) world/canonical-frame points.
            code: (B, shape_code_dim) shape codes, or None when shape_code_dim = 0.
        Returns:
            sdf: (B, N); features: (B, N, feature_dim).
        """
        out = self.layers[-1](self.trunk(points, code))
        return out[..., 0], out[..., 1:]

    def with_gradient(
        self, points: torch.Tensor, code: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The field and its spatial gradient in one pass, as ordinary differentiable ops.

        Same values as :meth:`forward` plus ``torch.autograd.grad(sdf, points,
        create_graph=True)``, but the gradient is written out (reverse mode by
        hand: one 64-wide vector per point back through the layers, using the
        Softplus slopes sigmoid(beta z) saved by the forward), so training
        backpropagates through a plain graph instead of autograd's double
        backward: same flops, far fewer elementwise passes and saved tensors
        (``benchmarks/bench_volume.py`` compares the two).

        Args:
            points: (B, N, 3); may require grad (e.g. depend on a predicted pose).
            code: (B, shape_code_dim) or None when shape_code_dim = 0.
        Returns:
            sdf: (B, N); features: (B, N, feature_dim); gradient: (B, N, 3) d sdf / d points.
        """
        s = self.settings
        _check_points_and_code("SDFNetwork", points, code, s.shape_code_dim)
        if s.shape_code_dim == 0:
            code = None
        x_in = fold_symmetric(points) if s.symmetric else points
        pe, sin, cos = _encoding_parts(x_in, s.n_frequencies)
        inv_sqrt2 = 1.0 / math.sqrt(2.0)
        h = pe
        slopes = []
        batch = points.shape[0]
        for index, layer in enumerate(self.layers[:-1]):
            if index == 0 or index in self.skips:
                # z = scale ([h,] PE) W^T + scale code W_code^T + bias as two fused
                # multiply-adds (baddbmm), no elementwise passes over (B, N, W).
                width = 0 if index == 0 else layer.in_features - self.input_dim
                w = layer.weight if index == 0 else layer.weight * inv_sqrt2
                per_batch = layer.bias.expand(batch, 1, -1)
                if code is not None:
                    code_w = w[:, width + self.pe_dim :]
                    per_batch = per_batch + F.linear(code, code_w)[:, None, :]
                w_pe = w[:, width : width + self.pe_dim].t().expand(batch, -1, -1)
                z = torch.baddbmm(per_batch, pe, w_pe)
                if index > 0:
                    z = torch.baddbmm(z, h, w[:, :width].t().expand(batch, -1, -1))
            else:
                z = F.linear(h, layer.weight, layer.bias)
            h, slope = softplus_with_slope(z, s.softplus_beta)
            slopes.append(slope)
        last = self.layers[-1]
        out = F.linear(h, last.weight, last.bias)
        # Reverse pass for d sdf / d x: g = d sdf / d h_l, then d sdf / d z_l = g * slope_l.
        g = last.weight[0]  # (W,), broadcast against the first slope
        g_pe = None
        for index in range(len(self.layers) - 2, -1, -1):
            layer = self.layers[index]
            g_z = g * slopes[index]  # (B, N, W)
            if index == 0:
                g_in = F.linear(g_z, layer.weight[:, : self.pe_dim].t())
                g_pe = g_in if g_pe is None else g_pe + g_in
                break
            if index in self.skips:
                width = layer.in_features - self.input_dim
                w = layer.weight * inv_sqrt2  # the layer reads [h, input] / sqrt(2)
                g_in = F.linear(g_z, w[:, width : width + self.pe_dim].t())
                g_pe = g_in if g_pe is None else g_pe + g_in
                g = F.linear(g_z, w[:, :width].t())
            else:
                g = F.linear(g_z, layer.weight.t())
        gradient = _encoding_backward(g_pe, sin, cos, s.n_frequencies)
        if s.symmetric:
            gradient = torch.cat(
                [gradient[..., :1] * torch.sign(points[..., :1]), gradient[..., 1:]], -1
            )
        return out[..., 0], out[..., 1:], gradient


class ColorNetwork(nn.Module):
    """The conditional colour MLP: (points, colour code, SDF features) -> RGB in (0, 1)."""

    def __init__(self, settings: SDFFieldSettings | None = None):
        super().__init__()
        self.settings = s = settings or SDFFieldSettings()
        self.pe_dim = s.encoding_dim
        in_dim = self.pe_dim + s.color_code_dim + s.feature_dim
        dims = [in_dim] + [s.color_hidden_width] * s.color_hidden_layers + [3]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(
        self, points: torch.Tensor, code: torch.Tensor | None, features: torch.Tensor
    ) -> torch.Tensor:
        """Args: points (B, N, 3); code (B, color_code_dim) or None; features (B, N, feature_dim).

        Returns:
            rgb: (B, N, 3) in (0, 1).
        """
        s = self.settings
        _check_points_and_code("ColorNetwork", points, code, s.color_code_dim)
        if features.shape != (*points.shape[:2], s.feature_dim):
            raise ValueError(
                f"ColorNetwork: features must be {(*points.shape[:2], s.feature_dim)}, "
                f"got {tuple(features.shape)}"
            )
        x_in = fold_symmetric(points) if s.symmetric else points
        pe = positional_encoding(x_in, s.n_frequencies)
        first = self.layers[0]
        w = first.weight
        p, c = self.pe_dim, s.color_code_dim
        batch = points.shape[0]
        bias = first.bias.expand(batch, 1, -1)
        if c > 0:
            bias = bias + F.linear(code, w[:, p : p + c])[:, None, :]
        # Two fused multiply-adds: bias + PE W_pe^T + features W_f^T.
        z = torch.baddbmm(bias, pe, w[:, :p].t().expand(batch, -1, -1))
        z = torch.baddbmm(z, features, w[:, p + c :].t().expand(batch, -1, -1))
        h = torch.relu_(z)
        for layer in self.layers[1:-1]:
            h = torch.relu(layer(h))
        return torch.sigmoid(self.layers[-1](h))


class BoundSDF:
    """An :class:`SDFNetwork` bound to a batch of shape codes: the renderer's ``field_fn``.

    ``bound(points (B, N, 3)) -> (sdf (B, N), features (B, N, F))``;
    ``bound.with_gradient(points) -> (sdf, features, grad sdf (B, N, 3))``, which
    ``poseless.render.volume.sdf_with_gradient`` uses instead of autograd.
    """

    def __init__(self, network: SDFNetwork, code: torch.Tensor | None):
        self.network = network
        self.code = code

    def __call__(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """points (B, N, 3) -> (sdf (B, N), features (B, N, F))."""
        return self.network(points, self.code)

    def with_gradient(
        self, points: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """points (B, N, 3) -> (sdf (B, N), features (B, N, F), gradient (B, N, 3))."""
        return self.network.with_gradient(points, self.code)


class SDFField(nn.Module):
    """ShapeClipper's SDF + colour fields, with closures for the volume renderer."""

    def __init__(self, settings: SDFFieldSettings | None = None):
        super().__init__()
        self.settings = settings or SDFFieldSettings()
        self.sdf = SDFNetwork(self.settings)
        self.color = ColorNetwork(self.settings)

    def sdf_fn(self, shape_code: torch.Tensor | None = None) -> BoundSDF:
        """``field_fn(points (B, N, 3)) -> (sdf (B, N), features (B, N, F))`` for one batch of
        codes; its ``with_gradient`` also returns grad sdf (see :class:`BoundSDF`)."""
        return BoundSDF(self.sdf, shape_code)

    def color_fn(
        self, color_code: torch.Tensor | None = None
    ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """``color_fn(points (B, N, 3), features (B, N, F)) -> rgb (B, N, 3)`` for one batch of codes."""
        return lambda points, features: self.color(points, color_code, features)
