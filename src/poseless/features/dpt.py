"""DPT-Hybrid (Ranftl et al.) as released by Omnidata for surface normals, built in code.

Architecture (Omnidata ``DPTDepthModel(backbone="vitb_rn50_384", num_channels=3)``):

* backbone: timm ``vit_base_r50_s16_384`` (ResNet-50 stem + stages 0-2, 1x1 patch
  projection to 768, 12 ViT-B blocks). Features: ResNet stage 0 (256 ch, 1/4) and
  stage 1 (512 ch, 1/8) as they are; ViT blocks 8 and 11 (hooks ``[0, 1, 8, 11]``)
  through "project" readout (Linear(1536, 768) + GELU on [token, cls]), reshaped to
  the 1/16 grid, 1x1 conv to 768, and for block 11 a stride-2 3x3 conv (1/32).
* reassemble: ``scratch.layer{1..4}_rn`` 3x3 convs (no bias) to 256 channels.
* fusion: ``scratch.refinenet{4..1}``: residual conv units, x2 bilinear upsampling
  (align_corners=True), 1x1 ``out_conv``.
* head ``scratch.output_conv``: conv 3x3 256->128, x2 upsample, conv 3x3 128->32,
  ReLU, conv 1x1 32->3, ReLU.

Module names equal the released checkpoint's keys (``pretrained.model.*``,
``pretrained.act_postprocess{3,4}.*``, ``scratch.*``). The released file
``omnidata_dpt_normal_v2.ckpt`` is a Lightning-style dict whose ``state_dict``
keys carry a ``model.`` prefix; :func:`load_omnidata_checkpoint` reads that and
plain state dicts. The position embedding is resized to the input grid, so any
input side that is a multiple of 32 works (384 as released).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from poseless.errors import PoselessError

BACKBONE = "vit_base_r50_s16_384"
"""timm name of the hybrid ViT backbone."""
VIT_HOOKS = (8, 11)
"""ViT blocks whose outputs feed reassemble levels 3 and 4."""


class CheckpointError(PoselessError):
    """A normal-model checkpoint is missing, unreadable or does not fit the model."""


class ProjectReadout(nn.Module):
    """Concatenate each patch token with the class token, Linear(2C, C) + GELU."""

    def __init__(self, dim: int):
        super().__init__()
        self.project = nn.Sequential(nn.Linear(2 * dim, dim), nn.GELU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 1 + T, C) -> (B, T, C)."""
        cls = x[:, :1].expand(-1, x.shape[1] - 1, -1)
        return self.project(torch.cat([x[:, 1:], cls], dim=-1))


class ResidualConvUnit(nn.Module):
    """x + conv(relu(conv(relu(x)))), 3x3 convs with bias."""

    def __init__(self, features: int):
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1, bias=True)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) -> same."""
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FusionBlock(nn.Module):
    """DPT fusion: (skip through a residual unit) + path, residual unit, x2 upsample, 1x1 conv."""

    def __init__(self, features: int):
        super().__init__()
        self.out_conv = nn.Conv2d(features, features, 1, bias=True)
        self.resConfUnit1 = ResidualConvUnit(features)  # noqa: N815 - released key name
        self.resConfUnit2 = ResidualConvUnit(features)  # noqa: N815 - released key name

    def forward(self, path: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        """path, skip: (B, C, H, W) -> (B, C, 2H, 2W)."""
        if skip is not None:
            path = path + self.resConfUnit1(skip)
        path = self.resConfUnit2(path)
        path = F.interpolate(path, scale_factor=2, mode="bilinear", align_corners=True)
        return self.out_conv(path)


class Upsample2x(nn.Module):
    """Bilinear x2 upsampling with align_corners=True (no parameters)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C, H, W) -> (B, C, 2H, 2W)."""
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)


def _postprocess(dim: int, out: int, downsample: bool) -> nn.Sequential:
    # indices 0 (readout), 1-2 (transpose/unflatten: done in forward, no parameters), 3, 4
    layers = [ProjectReadout(dim), nn.Identity(), nn.Identity(), nn.Conv2d(dim, out, 1)]
    if downsample:
        layers.append(nn.Conv2d(out, out, 3, stride=2, padding=1))
    return nn.Sequential(*layers)


class DPTHybridNormal(nn.Module):
    """DPT-Hybrid with a 3-channel head; outputs (B, 3, H, W) in [0, inf) (clamp to [0, 1]).

    Args:
        num_channels: output channels (3 for normals).
        features: fusion width (256 in the release).
    """

    def __init__(self, num_channels: int = 3, features: int = 256):
        super().__init__()
        import timm

        self.pretrained = nn.Module()
        self.pretrained.model = timm.create_model(BACKBONE, pretrained=False)
        dim = self.pretrained.model.embed_dim
        self.pretrained.act_postprocess1 = nn.Sequential(
            nn.Identity(), nn.Identity(), nn.Identity()
        )
        self.pretrained.act_postprocess2 = nn.Sequential(
            nn.Identity(), nn.Identity(), nn.Identity()
        )
        self.pretrained.act_postprocess3 = _postprocess(dim, dim, downsample=False)
        self.pretrained.act_postprocess4 = _postprocess(dim, dim, downsample=True)
        self.scratch = nn.Module()
        for i, c in enumerate((256, 512, dim, dim), start=1):
            setattr(self.scratch, f"layer{i}_rn", nn.Conv2d(c, features, 3, padding=1, bias=False))
        for i in range(1, 5):
            setattr(self.scratch, f"refinenet{i}", FusionBlock(features))
        self.scratch.output_conv = nn.Sequential(
            nn.Conv2d(features, features // 2, 3, padding=1),
            Upsample2x(),
            nn.Conv2d(features // 2, 32, 3, padding=1),
            nn.ReLU(True),
            nn.Conv2d(32, num_channels, 1),
            nn.ReLU(True),
            nn.Identity(),
        )

    def _pos_embed(self, gh: int, gw: int) -> torch.Tensor:
        pe = self.pretrained.model.pos_embed  # (1, 1 + G*G, C)
        tok, grid = pe[:, :1], pe[0, 1:]
        g = int(round(grid.shape[0] ** 0.5))
        grid = grid.reshape(1, g, g, -1).permute(0, 3, 1, 2)
        if (gh, gw) != (g, g):
            grid = F.interpolate(grid, size=(gh, gw), mode="bilinear", align_corners=False)
        return torch.cat([tok, grid.permute(0, 2, 3, 1).reshape(1, gh * gw, -1)], dim=1)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x: (B, 3, H, W), H and W multiples of 32 -> 4 feature maps at 1/4, 1/8, 1/16, 1/32."""
        b, _, h, w = x.shape
        if h % 32 or w % 32:
            raise ValueError(f"DPT input sides must be multiples of 32, got {h}x{w}")
        vit = self.pretrained.model
        backbone = vit.patch_embed.backbone
        f = backbone.stem(x)
        layer1 = backbone.stages[0](f)  # (B, 256, H/4, W/4)
        layer2 = backbone.stages[1](layer1)  # (B, 512, H/8, W/8)
        f = backbone.norm(backbone.stages[2](layer2))  # (B, 1024, H/16, W/16)
        tokens = vit.patch_embed.proj(f).flatten(2).transpose(1, 2)  # (B, T, C)
        gh, gw = h // 16, w // 16
        t = torch.cat([vit.cls_token.expand(b, -1, -1), tokens], dim=1) + self._pos_embed(gh, gw)
        t = vit.pos_drop(t)
        outs = {}
        for i, blk in enumerate(vit.blocks):
            t = blk(t)
            if i in VIT_HOOKS:
                outs[i] = t
            if i >= max(VIT_HOOKS):
                break
        feats = [layer1, layer2]
        for i, post in zip(
            VIT_HOOKS, (self.pretrained.act_postprocess3, self.pretrained.act_postprocess4)
        ):
            y = post[0](outs[i]).transpose(1, 2).reshape(b, -1, gh, gw)  # (B, C, gh, gw)
            feats.append(post[3:](y))
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, H, W) RGB in [0, 1] -> (B, num_channels, H, W) >= 0."""
        l1, l2, l3, l4 = self.encode(x)
        s = self.scratch
        p = s.refinenet4(s.layer4_rn(l4))
        p = s.refinenet3(p, s.layer3_rn(l3))
        p = s.refinenet2(p, s.layer2_rn(l2))
        p = s.refinenet1(p, s.layer1_rn(l1))
        return s.output_conv(p)


def omnidata_state_dict(model: nn.Module) -> dict:
    """``model``'s weights in the released Omnidata file layout ({"state_dict": {"model.<key>": ...}})."""
    return {"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}


def load_omnidata_checkpoint(model: nn.Module, path: str | Path) -> None:
    """Load a released Omnidata DPT checkpoint (or a plain state dict) into ``model``.

    Raises:
        CheckpointError: missing file, unreadable file, or keys/shapes that do not
            fit, naming the path and what to set.
    """
    path = Path(path)
    hint = "set estimate_normals.checkpoint to the local omnidata_dpt_normal_v2.ckpt"
    if not path.is_file():
        raise CheckpointError(f"{path}: normal-model checkpoint not found; {hint}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, pickle errors, ... all mean "unreadable"
        raise CheckpointError(
            f"{path}: cannot read checkpoint ({type(exc).__name__}: {exc}); {hint}"
        ) from exc
    if not isinstance(ckpt, dict):
        raise CheckpointError(
            f"{path}: expected a dict checkpoint, got {type(ckpt).__name__}; {hint}"
        )
    sd = ckpt.get("state_dict", ckpt)
    sd = {(k[len("model.") :] if k.startswith("model.") else k): v for k, v in sd.items()}
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    bad_shape = sorted(k for k in set(own) & set(sd) if tuple(own[k].shape) != tuple(sd[k].shape))
    if missing or unexpected or bad_shape:
        raise CheckpointError(
            f"{path}: does not fit DPT-Hybrid ({len(missing)} missing e.g. {missing[:3]}, "
            f"{len(unexpected)} unexpected e.g. {unexpected[:3]}, shape mismatch {bad_shape[:3]}); {hint}"
        )
    model.load_state_dict(sd, strict=True)
