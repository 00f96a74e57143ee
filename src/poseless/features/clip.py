"""Image embeddings for the CLIP-kNN shape-consistency loss (stage ``embed_images``).

Encoders share one interface: ``encode(images, masks, ids) -> (B, D)`` float32
L2-normalised rows, ``dim`` and ``info()`` (recorded in ``encoder.json``):

* ``clip`` -- the open_clip image tower (ShapeClipper: ViT-L/14, OpenAI weights)
  on the white-background image, preprocessed exactly as the model defines it
  (``open_clip.create_model_and_transforms``).
* ``hog`` -- :mod:`poseless.features.hog`, needs no weights (offline fallback).
* ``oracle`` -- the ground-truth ``shape_params`` of synthetic data, an upper bound.

Weights are looked up **offline only** (:func:`resolve_clip_weights`): a local
checkpoint file, or an open_clip tag already in the Hugging Face / open_clip
cache. When neither exists the stage fails within seconds, naming what to set,
unless ``fallback: hog`` says to run the fallback (recorded with the reason).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from poseless.config import EmbedImagesConfig
from poseless.errors import PoselessError
from poseless.features.hog import HogEncoder, HogSettings
from poseless.utils import file_sha256

log = logging.getLogger(__name__)

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".npz")
"""File endings that make ``pretrained`` a path rather than an open_clip tag."""

HOW_TO_FIX = (
    "set embed_images.pretrained to a local checkpoint path, "
    "or embed_images.fallback: hog (or encoder: hog)"
)


class WeightsUnavailable(PoselessError):
    """The configured weights are not on this machine (and will not be downloaded)."""


@dataclass(frozen=True)
class ClipWeights:
    """Where CLIP weights come from, resolved without touching the network."""

    path: str | None
    """Local checkpoint file, or None for random initialisation."""
    source: str
    """file (a path in params), cache (a tag found in the local cache) or random."""
    create_kwargs: dict = field(default_factory=dict)
    """Extra ``create_model_and_transforms`` arguments a tag implies (quick_gelu, mean, std)."""
    weights_only: bool = True
    """Passed to open_clip's loader (False only for OpenAI TorchScript archives)."""


def looks_like_path(pretrained: str) -> bool:
    """Whether ``pretrained`` names a file rather than an open_clip tag."""
    return os.sep in pretrained or pretrained.endswith(CHECKPOINT_SUFFIXES)


def _tag_kwargs(pcfg: dict) -> dict:
    kwargs = {}
    if pcfg.get("quick_gelu"):
        kwargs["force_quick_gelu"] = True
    for src, dst in (
        ("mean", "image_mean"),
        ("std", "image_std"),
        ("interpolation", "image_interpolation"),
        ("resize_mode", "image_resize_mode"),
    ):
        if src in pcfg:
            kwargs[dst] = pcfg[src]
    return kwargs


def _cached_tag_file(pcfg: dict) -> tuple[str | None, bool]:
    """Local file of a pretrained tag in the HF or open_clip cache, without network."""
    hub = pcfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import try_to_load_from_cache

        # open_clip's form: "org/repo/filename" or "org/repo/" (default file names)
        repo_id, _, fname = (
            hub.rstrip("/").rpartition("/") if not hub.endswith("/") else (hub.rstrip("/"), "", "")
        )
        names = [fname] if fname else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        for name in names:
            found = try_to_load_from_cache(repo_id, name)
            if isinstance(found, str) and os.path.isfile(found):
                return found, True
    url = pcfg.get("url", "")
    if url:
        path = Path("~/.cache/clip").expanduser() / os.path.basename(url)
        if path.is_file():
            # OpenAI's releases are TorchScript archives; torch.load needs weights_only=False.
            return str(path), "openaipublic" not in url
    return None, True


def resolve_clip_weights(model: str, pretrained: str, allow_random_init: bool) -> ClipWeights:
    """Find CLIP weights on this machine; never downloads, returns or raises within seconds.

    Args:
        model: open_clip model name.
        pretrained: open_clip tag (``openai``, ``laion2b_s32b_b82k``), a checkpoint path, or ""
            for random initialisation (only with ``allow_random_init``).
        allow_random_init: permit ``pretrained: ""`` (tests).
    Raises:
        WeightsUnavailable: the file is missing or the tag is not in the local cache;
            the message says what to set.
    """
    import open_clip

    if not pretrained:
        if allow_random_init:
            return ClipWeights(None, "random")
        raise WeightsUnavailable(
            "embed_images.pretrained is empty and allow_random_init is false; " + HOW_TO_FIX
        )
    if looks_like_path(pretrained):
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise WeightsUnavailable(f"{path}: CLIP checkpoint file not found; {HOW_TO_FIX}")
        return ClipWeights(str(path), "file")
    pcfg = open_clip.get_pretrained_cfg(model, pretrained)
    if not pcfg:
        known = open_clip.list_pretrained_tags_by_model(model)
        raise WeightsUnavailable(
            f"embed_images.pretrained: {pretrained!r} is not an open_clip tag of model {model!r} "
            f"(known: {known}) nor a checkpoint path; {HOW_TO_FIX}"
        )
    path, weights_only = _cached_tag_file(pcfg)
    if path is None:
        raise WeightsUnavailable(
            f"CLIP weights {model}/{pretrained} are not in the local cache and nothing is "
            f"downloaded (offline policy); {HOW_TO_FIX}"
        )
    return ClipWeights(path, "cache", _tag_kwargs(pcfg), weights_only)


class ClipEncoder:
    """open_clip image tower with the model's own preprocessing.

    Args:
        model_name: open_clip model name (registered, or registered from ``model_config``).
        weights: from :func:`resolve_clip_weights`.
        device: where the model runs (autocast fp16 on CUDA).
        model_config: optional JSON model config to register under its file stem.
    """

    kind = "clip"

    def __init__(self, model_name: str, weights: ClipWeights, device, model_config: str = ""):
        import open_clip

        if model_config:
            cfg_path = Path(model_config)
            if not cfg_path.is_file():
                raise PoselessError(f"{cfg_path}: embed_images.model_config file not found")
            open_clip.add_model_config(cfg_path)
        if model_name not in open_clip.list_models():
            raise PoselessError(
                f"embed_images.model: {model_name!r} is not an open_clip model "
                "(see open_clip.list_models(), or set embed_images.model_config)"
            )
        self.device = torch.device(device)
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name,
                pretrained=weights.path,
                device=self.device,
                weights_only=weights.weights_only,
                **weights.create_kwargs,
            )
        except Exception as exc:  # corrupt / mismatched checkpoints surface as many types
            raise PoselessError(
                f"{weights.path}: cannot load as open_clip {model_name!r} weights "
                f"({type(exc).__name__}: {exc}); {HOW_TO_FIX}"
            ) from exc
        self.model = model.eval()
        self.preprocess = preprocess
        self.weights = weights
        self.model_name = model_name
        with torch.no_grad():
            probe = torch.ones(1, 3, 8, 8)
            self.dim = int(self._forward(self._prep(probe)).shape[1])

    def _prep(self, images: torch.Tensor) -> torch.Tensor:
        from PIL import Image

        arr = (images.permute(0, 2, 3, 1).clamp(0, 1) * 255).round().byte().cpu().numpy()
        return torch.stack([self.preprocess(Image.fromarray(a)) for a in arr])

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device)
        with torch.autocast("cuda", enabled=self.device.type == "cuda"):
            z = self.model.encode_image(x)
        return F.normalize(z.float(), dim=-1)

    @torch.no_grad()
    def encode(self, images: torch.Tensor, masks: torch.Tensor, ids: list[str]) -> np.ndarray:
        """images: (B, 3, H, W) white background in [0, 1] -> (B, dim) float32 unit rows."""
        return self._forward(self._prep(images)).cpu().numpy()

    def info(self) -> dict:
        """What ran, for ``encoder.json``."""
        w = self.weights
        return {
            "kind": self.kind,
            "model": self.model_name,
            "weights_source": w.source,
            "checkpoint": w.path,
            "checkpoint_sha256": file_sha256(w.path) if w.path else None,
            "dim": self.dim,
        }


class OracleEncoder:
    """Ground-truth ``shape_params`` as an embedding (synthetic data; an upper bound).

    Per category the parameters are standardised over the given items and
    zero-padded to a common length; a one-hot category block weighted by
    ``2 * sqrt(D)`` keeps neighbours within their category. Rows are L2-normalised.
    """

    kind = "oracle"

    def __init__(self, dataset, ids: list[str]):
        params, cats = {}, {}
        for i in ids:
            if not dataset.has_gt(i):
                raise PoselessError(
                    f"{dataset.root}: item {i!r} has no ground truth; encoder: oracle needs shape_params"
                )
            params[i] = np.asarray(
                dataset.load_gt(i, ("shape_params",))["shape_params"], np.float64
            ).ravel()
            cats[i] = str(dataset.row(i)["category"])
        categories = sorted(set(cats.values()))
        d = max((len(p) for p in params.values()), default=0)
        table = {}
        for c in categories:
            members = [i for i in ids if cats[i] == c]
            lens = {len(params[i]) for i in members}
            if len(lens) != 1:
                raise PoselessError(
                    f"{dataset.root}: shape_params lengths differ within category {c!r}: {sorted(lens)}"
                )
            x = np.stack([params[i] for i in members])
            x = (x - x.mean(0)) / np.maximum(x.std(0), 1e-8)
            onehot = np.zeros((len(members), len(categories)))
            onehot[:, categories.index(c)] = 2.0 * np.sqrt(max(d, 1))
            x = np.concatenate([np.pad(x, ((0, 0), (0, d - x.shape[1]))), onehot], 1)
            x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
            table.update(zip(members, x.astype(np.float32)))
        self.table = table
        self.dim = d + len(categories)

    def encode(self, images: torch.Tensor, masks: torch.Tensor, ids: list[str]) -> np.ndarray:
        """Look up the rows of ``ids`` -> (B, dim) float32."""
        return np.stack([self.table[i] for i in ids])

    def info(self) -> dict:
        """What ran, for ``encoder.json``."""
        return {"kind": self.kind, "dim": self.dim, "source": "gt shape_params"}


def create_encoder(cfg: EmbedImagesConfig, dataset, ids: list[str], device):
    """Build the configured encoder, falling back only where ``cfg.fallback`` says so.

    Returns:
        (encoder, fallback): ``fallback`` is None, or {"used": "hog", "reason": message}.
    Raises:
        WeightsUnavailable: CLIP weights missing and no fallback configured.
    """
    hog_settings = HogSettings(
        cfg.hog_size, cfg.hog_orientations, cfg.hog_pixels_per_cell, cfg.hog_color_bins
    )
    if cfg.encoder == "hog":
        return HogEncoder(hog_settings), None
    if cfg.encoder == "oracle":
        return OracleEncoder(dataset, ids), None
    try:
        weights = resolve_clip_weights(cfg.model, cfg.pretrained, cfg.allow_random_init)
    except WeightsUnavailable as exc:
        if cfg.fallback == "hog":
            log.warning("CLIP unavailable, using the hog fallback: %s", exc)
            return HogEncoder(hog_settings), {"used": "hog", "reason": str(exc)}
        raise
    return ClipEncoder(cfg.model, weights, device, cfg.model_config), None


def encoder_record(encoder, cfg: EmbedImagesConfig, fallback: dict | None) -> dict:
    """The ``encoder.json`` record: kind, model, pretrained, checkpoint sha256, dim, fallback."""
    info = encoder.info()
    return {
        **info,
        "configured": {"encoder": cfg.encoder, "model": cfg.model, "pretrained": cfg.pretrained},
        "fallback": fallback,
    }


def embed_batch(
    encoder, images: torch.Tensor, masks: torch.Tensor, ids: list[str], background
) -> np.ndarray:
    """Embed one batch on white background; returns (B, D) float16 unit rows.

    Args:
        images: (B, 3, H, W) prepared images composited on ``background``.
        masks: (B, 1, H, W) float in [0, 1].
    """
    from poseless.features.stream import composite_on_white

    z = encoder.encode(composite_on_white(images, masks, background), masks, ids)
    z = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    return z.astype(np.float16)
