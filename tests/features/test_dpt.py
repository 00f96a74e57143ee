"""DPT-Hybrid normal model: released Omnidata key layout, checkpoint round trip, errors."""

from __future__ import annotations

import pytest
import torch

from poseless.features.dpt import (
    CheckpointError,
    DPTHybridNormal,
    load_omnidata_checkpoint,
    omnidata_state_dict,
)
from poseless.features.normals import build_omnidata_model, predict_normals

# Keys and shapes of the released omnidata_dpt_normal_v2.ckpt (state_dict, "model." prefix).
RELEASED_KEYS = {
    "model.pretrained.model.cls_token": (1, 1, 768),
    "model.pretrained.model.pos_embed": (1, 577, 768),
    "model.pretrained.model.patch_embed.backbone.stem.conv.weight": (64, 3, 7, 7),
    "model.pretrained.model.patch_embed.backbone.stages.0.blocks.0.downsample.conv.weight": (
        256,
        64,
        1,
        1,
    ),
    "model.pretrained.model.patch_embed.proj.weight": (768, 1024, 1, 1),
    "model.pretrained.model.blocks.11.attn.qkv.weight": (2304, 768),
    "model.pretrained.act_postprocess3.0.project.0.weight": (768, 1536),
    "model.pretrained.act_postprocess3.3.weight": (768, 768, 1, 1),
    "model.pretrained.act_postprocess4.4.weight": (768, 768, 3, 3),
    "model.scratch.layer1_rn.weight": (256, 256, 3, 3),
    "model.scratch.layer2_rn.weight": (256, 512, 3, 3),
    "model.scratch.layer4_rn.weight": (256, 768, 3, 3),
    "model.scratch.refinenet4.resConfUnit1.conv1.weight": (256, 256, 3, 3),
    "model.scratch.refinenet1.out_conv.bias": (256,),
    "model.scratch.output_conv.0.weight": (128, 256, 3, 3),
    "model.scratch.output_conv.2.weight": (32, 128, 3, 3),
    "model.scratch.output_conv.4.weight": (3, 32, 1, 1),
}


def random_dpt(seed: int = 0) -> DPTHybridNormal:
    """A DPT-Hybrid with small random weights, built without timm's slow init."""
    with torch.device("meta"):
        model = DPTHybridNormal()
    model = model.to_empty(device="cpu")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.uniform_(0.0, 0.1, generator=g)
            elif "norm" in name and p.ndim == 1:
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02, generator=g)
    return model.eval()


@pytest.mark.slow
def test_released_layout_round_trip(tmp_path):
    model = random_dpt()
    ckpt = omnidata_state_dict(model)
    sd = ckpt["state_dict"]
    for key, shape in RELEASED_KEYS.items():
        assert key in sd, f"released key {key} missing"
        assert tuple(sd[key].shape) == shape, f"{key}: {tuple(sd[key].shape)} != {shape}"
    assert all(k.startswith(("model.pretrained.", "model.scratch.")) for k in sd)
    path = tmp_path / "omnidata_dpt_normal_v2.ckpt"
    torch.save({"epoch": 0, "global_step": 0, **ckpt}, path)  # Lightning-style dict
    loaded = build_omnidata_model(path, "cpu")
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        got = loaded(x)
    assert got.shape == (2, 3, 64, 64) and (got >= 0).all()
    torch.testing.assert_close(got, ref)
    masks = torch.ones(2, 1, 32, 32)
    n = predict_normals(loaded, torch.rand(2, 3, 32, 32), masks, input_size=64)
    torch.testing.assert_close(n.norm(dim=1), torch.ones(2, 32, 32), atol=1e-4, rtol=0)


def test_bad_checkpoints_name_path_and_setting(tmp_path):
    small = torch.nn.Linear(2, 2)
    with pytest.raises(
        CheckpointError,
        match=r"nope\.ckpt: normal-model checkpoint not found; set estimate_normals\.checkpoint",
    ):
        load_omnidata_checkpoint(small, tmp_path / "nope.ckpt")
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match=r"junk\.ckpt: cannot read checkpoint"):
        load_omnidata_checkpoint(small, junk)
    wrong = tmp_path / "wrong.ckpt"
    torch.save(
        {"state_dict": {"model.weight": torch.zeros(3, 3), "model.extra": torch.zeros(1)}}, wrong
    )
    with pytest.raises(
        CheckpointError,
        match=r"wrong\.ckpt: does not fit DPT-Hybrid \(1 missing.*1 unexpected.*shape mismatch \['weight'\]",
    ):
        load_omnidata_checkpoint(small, wrong)
    good = tmp_path / "good.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in small.state_dict().items()}}, good)
    other = torch.nn.Linear(2, 2)
    load_omnidata_checkpoint(other, good)
    torch.testing.assert_close(other.weight, small.weight)
