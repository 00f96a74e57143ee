"""Embedding encoders: CLIP loaded from a release-format checkpoint, offline failure, HOG, oracle."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
from PIL import Image

from poseless.config import EmbedImagesConfig
from poseless.data.prepared import PreparedDataset
from poseless.errors import PoselessError
from poseless.features.clip import (
    ClipEncoder,
    OracleEncoder,
    WeightsUnavailable,
    create_encoder,
    embed_batch,
    resolve_clip_weights,
)
from poseless.features.hog import HogSettings, hog_descriptor, hog_dim
from poseless.features.stream import composite_on_white

TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 1, "layers": 1},
}


def save_tiny_clip(folder):
    """A random-init open_clip model saved as the releases are: torch.save(state_dict)."""
    import open_clip

    cfg_path = folder / "TinyCLIP-test.json"
    cfg_path.write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(cfg_path)
    torch.manual_seed(0)
    model, _, preprocess = open_clip.create_model_and_transforms("TinyCLIP-test", pretrained=None)
    ckpt = folder / "tiny_clip.pt"
    torch.save(model.state_dict(), ckpt)
    return cfg_path, ckpt, model.eval(), preprocess


@pytest.fixture
def no_cached_weights(monkeypatch, tmp_path):
    """Empty HF / open_clip caches, whatever this machine holds."""
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def test_clip_from_release_format_checkpoint_matches_model(tmp_path, prepared):
    cfg_path, ckpt, model, preprocess = save_tiny_clip(tmp_path)
    weights = resolve_clip_weights("TinyCLIP-test", str(ckpt), allow_random_init=False)
    assert weights.source == "file" and weights.path == str(ckpt)
    enc = ClipEncoder("TinyCLIP-test", weights, "cpu", str(cfg_path))
    assert enc.dim == 16
    ds = PreparedDataset(prepared)
    b = ds.load(ds.ids()[:4])
    got = enc.encode(b.images, b.masks, b.ids)
    # reference: the saved model itself with its own preprocessing, image by image
    with torch.no_grad():
        ref = []
        for im in b.images:
            arr = (im.permute(1, 2, 0) * 255).round().byte().numpy()
            z = model.encode_image(preprocess(Image.fromarray(arr))[None])
            ref.append(torch.nn.functional.normalize(z, dim=-1)[0].numpy())
    np.testing.assert_allclose(got, np.stack(ref), atol=1e-5)
    info = enc.info()
    assert info["checkpoint_sha256"] and info["dim"] == 16 and info["weights_source"] == "file"


def test_missing_weights_fail_fast_with_what_to_set(no_cached_weights):
    t0 = time.monotonic()
    with pytest.raises(WeightsUnavailable) as err:
        resolve_clip_weights("ViT-L-14", "openai", allow_random_init=False)
    assert time.monotonic() - t0 < 5.0, "must not wait on the network"
    msg = str(err.value)
    assert "embed_images.pretrained" in msg and "embed_images.fallback: hog" in msg, msg
    with pytest.raises(
        WeightsUnavailable, match=r"/no/such/clip\.pt: CLIP checkpoint file not found"
    ):
        resolve_clip_weights("ViT-L-14", "/no/such/clip.pt", allow_random_init=False)
    with pytest.raises(WeightsUnavailable, match="not an open_clip tag"):
        resolve_clip_weights("ViT-L-14", "no-such-tag", allow_random_init=False)
    with pytest.raises(WeightsUnavailable, match="allow_random_init is false"):
        resolve_clip_weights("ViT-L-14", "", allow_random_init=False)
    assert resolve_clip_weights("ViT-L-14", "", allow_random_init=True).source == "random"


def test_fallback_to_hog_is_recorded(no_cached_weights, prepared):
    ds = PreparedDataset(prepared)
    cfg = EmbedImagesConfig(fallback="hog")
    enc, fb = create_encoder(cfg, ds, ds.ids(), "cpu")
    assert enc.kind == "hog" and fb["used"] == "hog" and "not in the local cache" in fb["reason"]
    with pytest.raises(WeightsUnavailable):
        create_encoder(EmbedImagesConfig(), ds, ds.ids(), "cpu")


def test_corrupt_clip_checkpoint_names_the_file(tmp_path):
    cfg_path = tmp_path / "TinyCLIP-test.json"
    cfg_path.write_text(json.dumps(TINY_CLIP))
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a checkpoint")
    weights = resolve_clip_weights("TinyCLIP-test", str(bad), allow_random_init=False)
    with pytest.raises(
        PoselessError, match=r"broken\.pt: cannot load as open_clip 'TinyCLIP-test'"
    ):
        ClipEncoder("TinyCLIP-test", weights, "cpu", str(cfg_path))
    with pytest.raises(PoselessError, match="not an open_clip model"):
        ClipEncoder("No-Such-Model", weights, "cpu")


def test_hog_descriptor_unit_norm_and_background_free(prepared, prepared_grey):
    s = HogSettings(size=32, pixels_per_cell=8, color_bins=4)
    white, grey = PreparedDataset(prepared), PreparedDataset(prepared_grey)
    ids = white.ids()[:3]
    bw, bg = white.load(ids), grey.load(ids)
    regrey = composite_on_white(bg.images, bg.masks, grey.meta["background"])
    torch.testing.assert_close(regrey, bw.images, atol=1.5 / 255, rtol=0)
    d = hog_descriptor(bw.images[0], bw.masks[0], s)
    assert d.shape == (hog_dim(s),) and abs(np.linalg.norm(d) - 1) < 1e-5
    e_w = embed_batch(
        create_encoder(EmbedImagesConfig(encoder="hog", hog_size=32), white, ids, "cpu")[0],
        bw.images,
        bw.masks,
        ids,
        [1, 1, 1],
    )
    assert e_w.dtype == np.float16
    np.testing.assert_allclose(np.linalg.norm(e_w.astype(np.float32), axis=1), 1.0, atol=2e-3)
    assert not np.allclose(e_w[0], e_w[1]), "different images must embed differently"


def test_oracle_nearest_is_closest_shape_in_category(prepared):
    ds = PreparedDataset(prepared)
    ids = ds.ids()
    enc = OracleEncoder(ds, ids)
    z = enc.encode(None, None, ids)
    cats = [ds.row(i)["category"] for i in ids]
    sim = z @ z.T
    np.fill_diagonal(sim, -np.inf)
    for r in range(len(ids)):
        j = int(np.argmax(sim[r]))
        assert cats[j] == cats[r], "oracle neighbours must share the category"
