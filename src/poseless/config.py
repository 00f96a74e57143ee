"""Typed, strict configuration: one frozen dataclass per ``params.yaml`` section.

``load_params(path)`` reads a YAML file and builds :class:`Params`. Unknown keys,
missing required keys and wrong types fail at load with the dotted key name and
the file, e.g. ``params.yaml: prepare_data.synthetic.categroies: unknown key``.

Stage scripts ask only for the sections they declare (``sections=...``); the
workflow and ``dvc.yaml`` use the same list, so a stage reruns exactly when one
of its sections changes.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A params file does not match the schema."""


# ---------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------


def _check_split_fractions(fractions: tuple[float, ...]) -> None:
    if any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(
            f"split_fractions: must be non-negative and sum to 1, got {list(fractions)}"
        )


@dataclass(frozen=True)
class AzimuthConfig:
    """How the synthetic renderer draws each view's azimuth."""

    mode: Literal["uniform", "discrete"] = "uniform"
    """uniform: U[0, 360); discrete: one of ``values_deg`` with ``weights``."""
    values_deg: tuple[float, ...] = ()
    """Allowed azimuths in degrees (discrete mode), e.g. URA's sparse subsets."""
    weights: tuple[float, ...] = ()
    """Relative probabilities of ``values_deg`` (empty: equal)."""
    jitter_deg: float = 0.0
    """Uniform jitter (+/- degrees) added to discrete azimuths."""


@dataclass(frozen=True)
class ElevationConfig:
    """How the synthetic renderer draws each view's elevation."""

    mode: Literal["fixed", "uniform"] = "fixed"
    """fixed: ``value_deg``; uniform: U[range_deg[0], range_deg[1]]."""
    value_deg: float = 30.0
    """Elevation in degrees (fixed mode)."""
    range_deg: tuple[float, float] = (20.0, 40.0)
    """Elevation range in degrees (uniform mode)."""


@dataclass(frozen=True)
class SyntheticConfig:
    """The embedded, procedurally generated dataset (exact ground truth)."""

    categories: tuple[str, ...] = ("chair", "airplane")
    """Categories to generate, from ``poseless.data.synthetic.CATEGORIES``."""
    instances_per_category: int = 200
    """Shape instances per category (each with its own view(s))."""
    views_per_instance: int = 1
    """Views rendered per instance (1 = a single-view collection)."""
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    """Train / val / test fractions of instances (split by instance)."""
    azimuth: AzimuthConfig = field(default_factory=AzimuthConfig)
    """Azimuth distribution of the views."""
    elevation: ElevationConfig = field(default_factory=ElevationConfig)
    """Elevation distribution of the views."""
    distance: float = 2.732
    """Camera distance from the origin (Kato)."""
    fov_deg: float = 30.0
    """Full field of view in degrees (Kato)."""
    render_size: int = 64
    """Rendered image side in pixels."""
    voxel_resolution: int = 32
    """Ground-truth filled voxel grid resolution."""
    n_surface_points: int = 10000
    """Ground-truth surface points per instance."""
    workers: int = 2
    """Processes used to generate and render."""


@dataclass(frozen=True)
class FolderConfig:
    """A folder of RGBA PNGs, or image + mask pairs matched by name."""

    root: str = ""
    """Folder with the images (searched recursively)."""
    mask_suffix: str = "_mask"
    """``name<mask_suffix>.png`` is the mask of ``name.<ext>`` (image + mask pairs)."""
    mask_dir: str = ""
    """Optional separate folder of masks with the images' stems as names."""
    category: str = ""
    """Category of every item (empty: the image's parent folder name)."""
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    """Train / val / test fractions (deterministic by id hash)."""

    def validate(self) -> None:
        """Split fractions must be non-negative and sum to 1."""
        _check_split_fractions(self.split_fractions)


_NMR_CLASS_IDS = (
    "02691156",
    "02828884",
    "02933112",
    "02958343",
    "03001627",
    "03211117",
    "03636649",
    "03691459",
    "04090263",
    "04256520",
    "04379243",
    "04401088",
    "04530566",
)


def _check_root(name: str, root: str) -> None:
    if not root:
        raise ValueError(f"{name}.root: must be set when adapter is {name!r}")


@dataclass(frozen=True)
class ShapenetNmrConfig:
    """Kato et al.'s ShapeNet renderings (``{class}_{split}_images.npz`` + ``_voxels.npz``)."""

    root: str = ""
    """Folder holding the npz files."""
    classes: tuple[str, ...] = _NMR_CLASS_IDS
    """ShapeNet synset ids or our names (airplane, ..., vessel); default: all 13."""
    splits: tuple[str, ...] = ("train", "val", "test")
    """Published splits to read; items keep their published split."""
    views: Literal["one", "all"] = "one"
    """one: a single seeded random view per instance (single-view collection); all: every view."""
    view_subset: tuple[int, ...] = ()
    """Allowed view indices 0..23 (view k at azimuth 15k deg); empty: all 24."""
    max_instances_per_class: int = 0
    """Read at most this many instances per class and split (0: all)."""

    def validate(self) -> None:
        """Splits, views and limits must be valid."""
        bad = [s for s in self.splits if s not in ("train", "val", "test")]
        if bad or not self.splits:
            raise ValueError(f"splits: must be a non-empty subset of train/val/test, got {bad}")
        if any(v < 0 or v > 23 for v in self.view_subset):
            raise ValueError(f"view_subset: views must lie in 0..23, got {list(self.view_subset)}")
        if self.max_instances_per_class < 0:
            raise ValueError("max_instances_per_class: must be >= 0")
        if not self.classes:
            raise ValueError("classes: must name at least one class")


@dataclass(frozen=True)
class Pix3dConfig:
    """Pix3D (``pix3d.json`` + ``img/`` + ``mask/`` + ``model/``)."""

    root: str = ""
    """Folder holding pix3d.json and the img/, mask/, model/ folders."""
    annotation: str = "pix3d.json"
    """Annotation file, relative to ``root``."""
    categories: tuple[str, ...] = ("chair",)
    """Pix3D categories to keep (bed, bookcase, chair, desk, misc, sofa, table, tool, wardrobe)."""
    drop_truncated: bool = True
    """Drop entries marked truncated."""
    drop_occluded: bool = True
    """Drop entries marked occluded."""
    drop_slightly_occluded: bool = False
    """Drop entries marked slightly occluded."""
    split_lists: str = ""
    """Folder of ``{category}_{train|val|test}.txt`` image lists (ShapeClipper style); '' = hash split."""
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    """Train / val / test fractions of the id-hash split used when ``split_lists`` is ''."""
    load_models: bool = True
    """Attach the normalised CAD mesh (vertices, faces) as ground truth."""

    def validate(self) -> None:
        """At least one category; split fractions sum to 1."""
        if not self.categories:
            raise ValueError("categories: must name at least one category")
        _check_split_fractions(self.split_fractions)


@dataclass(frozen=True)
class CubConfig:
    """CUB-200-2011 (images/, segmentations/, bounding_boxes.txt, train_test_split.txt, images.txt)."""

    root: str = ""
    """Folder holding images.txt, train_test_split.txt, bounding_boxes.txt and images/."""
    segmentations: str = "segmentations"
    """Folder of the soft segmentation PNGs (relative to ``root`` or absolute)."""
    species: tuple[str, ...] = ()
    """Species folders to keep (e.g. 001.Black_footed_Albatross); empty: all 200."""
    val_fraction: float = 0.1
    """Fraction of the official train images carved out as val (deterministic by name hash)."""
    clip_mask_to_bbox: bool = False
    """Zero the mask outside the annotated bounding box."""
    max_items: int = 0
    """Read at most this many images (0: all), in images.txt order."""

    def validate(self) -> None:
        """Fractions and limits must be valid."""
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction: must lie in [0, 1), got {self.val_fraction}")
        if self.max_items < 0:
            raise ValueError("max_items: must be >= 0")


@dataclass(frozen=True)
class Pascal3dConfig:
    """Pascal3D+ ImageNet subset (Images/, Annotations/, CAD/) plus a folder of object masks."""

    root: str = ""
    """The PASCAL3D+_release1.1 folder."""
    categories: tuple[str, ...] = ("car",)
    """Pascal classes (aeroplane, bicycle, boat, bottle, bus, car, chair, diningtable, ...)."""
    mask_dir: str = ""
    """Folder of object masks ``{class}/{image stem}_{object index}.png`` (Pascal3D+ has none)."""
    drop_truncated: bool = True
    """Drop objects marked truncated."""
    drop_occluded: bool = True
    """Drop objects marked occluded."""
    drop_difficult: bool = True
    """Drop objects marked difficult."""
    split_lists: str = ""
    """Folder of ``pascal3d_imagenet_{class}_{split}.list`` ("stem index" lines); '' = hash split."""
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    """Train / val / test fractions of the id-hash split used when ``split_lists`` is ''."""
    load_models: bool = True
    """Attach the normalised CAD mesh (vertices, faces) as ground truth."""

    def validate(self) -> None:
        """At least one category; split fractions sum to 1."""
        if not self.categories:
            raise ValueError("categories: must name at least one category")
        _check_split_fractions(self.split_fractions)


@dataclass(frozen=True)
class PrepareDataConfig:
    """Stage ``prepare_data``: raw collection -> one prepared format."""

    adapter: Literal["synthetic", "folder", "shapenet_nmr", "pix3d", "cub", "pascal3d"] = (
        "synthetic"
    )
    """Which adapter reads the raw data (the keys of ``poseless.data.adapters.ADAPTERS``)."""
    image_size: int = 64
    """Side of the prepared square images."""
    crop: Literal["bbox", "none"] = "bbox"
    """bbox: square crop around the mask's bounding box; none: keep the frame
    (needed when the camera model must stay exact, e.g. the synthetic data)."""
    margin: float = 0.1
    """Margin around the bounding box, as a fraction of its longer side."""
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """RGB in [0, 1] the object is composited on."""
    on_bad_item: Literal["error", "skip"] = "error"
    """error: stop naming the file and the problem; skip: drop it into rejected.csv."""
    contact_sheet_items: int = 32
    """Items shown in the contact sheet."""
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    """Settings of the ``synthetic`` adapter."""
    folder: FolderConfig = field(default_factory=FolderConfig)
    """Settings of the ``folder`` adapter."""
    shapenet_nmr: ShapenetNmrConfig = field(default_factory=ShapenetNmrConfig)
    """Settings of the ``shapenet_nmr`` adapter."""
    pix3d: Pix3dConfig = field(default_factory=Pix3dConfig)
    """Settings of the ``pix3d`` adapter."""
    cub: CubConfig = field(default_factory=CubConfig)
    """Settings of the ``cub`` adapter."""
    pascal3d: Pascal3dConfig = field(default_factory=Pascal3dConfig)
    """Settings of the ``pascal3d`` adapter."""

    def validate(self) -> None:
        """Ranges the prepare_data stage relies on."""
        if self.image_size < 8:
            raise ValueError(f"image_size: must be at least 8, got {self.image_size}")
        if self.margin < 0:
            raise ValueError(f"margin: must be >= 0, got {self.margin}")
        if not all(0.0 <= c <= 1.0 for c in self.background):
            raise ValueError(
                f"background: RGB values must lie in [0, 1], got {list(self.background)}"
            )
        if self.contact_sheet_items < 0:
            raise ValueError(f"contact_sheet_items: must be >= 0, got {self.contact_sheet_items}")
        if self.adapter == "folder" and not self.folder.root:
            raise ValueError("folder.root: must be set when adapter is 'folder'")
        if self.adapter in ("shapenet_nmr", "pix3d", "cub", "pascal3d"):
            _check_root(self.adapter, getattr(self, self.adapter).root)
        if self.adapter == "pascal3d" and not self.pascal3d.mask_dir:
            raise ValueError(
                "pascal3d.mask_dir: must be set (Pascal3D+ has no masks; give a folder of "
                "{class}/{image stem}_{object index}.png object masks)"
            )


@dataclass(frozen=True)
class EmbedImagesConfig:
    """Stage ``embed_images``: one L2-normalised embedding per image (CLIP, HOG or oracle)."""

    encoder: Literal["clip", "hog", "oracle"] = "clip"
    """clip: open_clip image tower; hog: HOG + colour histogram (offline); oracle: GT shape_params."""
    model: str = "ViT-L-14"
    """open_clip model name (ShapeClipper: ViT-L-14; OpenAI weights from a file: ViT-L-14-quickgelu)."""
    pretrained: str = "openai"
    """open_clip tag (looked up in the local cache only) or path of a local checkpoint file."""
    model_config: str = ""
    """Optional open_clip model-config JSON registered under its file stem (custom or tiny models)."""
    allow_random_init: bool = False
    """Use a randomly initialised CLIP when ``pretrained`` is empty (tests only)."""
    fallback: Literal["none", "hog"] = "none"
    """Encoder used when the CLIP weights cannot be had offline (none: fail fast)."""
    batch_size: int = 32
    """Images per forward pass (also the resume granularity)."""
    hog_size: int = 64
    """Side the masked grayscale image is resized to before HOG."""
    hog_orientations: int = 9
    """HOG orientation bins."""
    hog_pixels_per_cell: int = 8
    """HOG cell side in pixels."""
    hog_color_bins: int = 8
    """Per-channel colour-histogram bins appended to HOG (0: none)."""

    def validate(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.hog_size < 2 * self.hog_pixels_per_cell:
            raise ValueError("hog_size must be at least two HOG cells")


@dataclass(frozen=True)
class BuildKnnConfig:
    """Stage ``build_knn``: K nearest neighbours of every image by embedding cosine."""

    k: int = 5
    """Neighbours per image (self excluded; ShapeClipper K = 5)."""
    within: Literal["split", "split_category", "all"] = "split"
    """Search only among items of the same split (and category), or among all items."""
    on_small_group: Literal["error", "fewer"] = "error"
    """A group with <= k items: error, or give its items fewer (all other) neighbours."""
    index: Literal["flat", "ivf", "hnsw"] = "flat"
    """flat: exact inner product (IndexFlatIP); ivf: IVF-Flat; hnsw: HNSW (approximate)."""
    nlist: int = 4096
    """IVF cells (capped at n / 39 per group)."""
    nprobe: int = 32
    """IVF cells visited per query."""
    train_size: int = 200000
    """IVF k-means training sample size per group."""
    kmeans_iters: int = 10
    """IVF k-means iterations."""
    ivf_quantizer: Literal["flat", "hnsw"] = "flat"
    """IVF coarse quantizer: exact (flat) or an HNSW graph over the centroids (large nlist)."""
    hnsw_m: int = 32
    """HNSW graph degree."""
    ef_construction: int = 80
    """HNSW build-time beam width."""
    ef_search: int = 64
    """HNSW search-time beam width."""
    query_batch: int = 16384
    """Queries per faiss search call (bounds memory)."""
    threads: int = 0
    """OpenMP threads for faiss (0: faiss default)."""
    diagnostics_items: int = 1000
    """Items sampled for the GT Chamfer / azimuth diagnostics (synthetic data; 0: none)."""
    diagnostics_points: int = 512
    """GT surface points per shape in the Chamfer diagnostic."""

    def validate(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if min(self.nlist, self.nprobe, self.train_size, self.hnsw_m, self.query_batch) < 1:
            raise ValueError("nlist, nprobe, train_size, hnsw_m and query_batch must be >= 1")


@dataclass(frozen=True)
class NormalCorruptionConfig:
    """Errors added to ground-truth normals (backend ``dataset``) to imitate an estimator."""

    noise_std: float = 0.0
    """Std of Gaussian noise added to each unit normal before renormalising (~radians)."""
    blotches: int = 0
    """Discs per image whose normals are replaced by one wrong random camera-facing normal."""
    flips: int = 0
    """Discs per image whose normals get their x and y signs flipped."""
    radius_range: tuple[float, float] = (0.05, 0.15)
    """Disc radius range as a fraction of the image side."""


@dataclass(frozen=True)
class EstimateNormalsConfig:
    """Stage ``estimate_normals``: camera-frame normal map per image."""

    backend: Literal["omnidata", "dataset"] = "omnidata"
    """omnidata: DPT-Hybrid from a released checkpoint; dataset: GT normals (synthetic)."""
    checkpoint: str = ""
    """Local path of ``omnidata_dpt_normal_v2.ckpt`` (backend omnidata)."""
    input_size: int = 384
    """Network input side (Omnidata: 384; a multiple of 32)."""
    axis_signs: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Signs applied to the network's (x, y, z) channels to reach the OpenCV camera frame."""
    batch_size: int = 8
    """Images per forward pass (also the resume granularity)."""
    corruption: NormalCorruptionConfig = field(default_factory=NormalCorruptionConfig)
    """Corruption of GT normals (backend dataset)."""
    contact_sheet_items: int = 16
    """Items shown (image | normals) in contact_sheet.png."""

    def validate(self) -> None:
        if self.input_size % 32:
            raise ValueError(f"input_size must be a multiple of 32, got {self.input_size}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if any(abs(s) != 1.0 for s in self.axis_signs):
            raise ValueError(f"axis_signs must be +1/-1, got {self.axis_signs}")
        lo, hi = self.corruption.radius_range
        if not 0.0 < lo <= hi <= 1.0:
            raise ValueError(
                f"corruption.radius_range must satisfy 0 < lo <= hi <= 1, got {(lo, hi)}"
            )
        if (
            self.corruption.noise_std < 0
            or self.corruption.blotches < 0
            or self.corruption.flips < 0
        ):
            raise ValueError("corruption.noise_std, blotches and flips must be >= 0")


# ---------------------------------------------------------------------------
# train_recon: experiments are named sets of overrides of ReconSettings
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ViewDiscriminatorSettings:
    """URA's view discriminator D2 on renders of the reconstruction."""

    enabled: bool = False
    """Train D2 and add its adversarial term to the reconstructor's loss."""
    pose_aware: bool = False
    """PAD ablation: condition D2 on the pseudo pose (URA's default is pose-independent)."""
    weight: float = 5e-4
    """Weight of -D2(random-view render) in the reconstructor's loss."""
    every: int = 3
    """The adversarial term enters the reconstructor's loss every ``every``-th iteration."""
    gp_weight: float = 10.0
    """WGAN-GP lambda of D2."""
    lr: float = 1e-4
    """Adam learning rate of D2."""
    gp_mode: Literal["per_sample", "per_pixel"] = "per_sample"
    """Gradient norm per sample (Gulrajani) or per pixel (URA code defect)."""

    def validate(self) -> None:
        """Positive period; non-negative weights."""
        if self.every < 1:
            raise ValueError(f"every: must be >= 1, got {self.every}")
        if self.weight < 0 or self.gp_weight < 0 or self.lr <= 0:
            raise ValueError("weight and gp_weight must be >= 0 and lr > 0")


@dataclass(frozen=True)
class MeshReconSettings:
    """Mesh reconstructor (URA; SoftRas silhouettes)."""

    reprojection: Literal["iou", "mse"] = "iou"
    """Silhouette re-projection loss."""
    laplacian_weight: float = 5e-3
    """Weight of the Laplacian regulariser."""
    flatten_weight: float = 5e-4
    """Weight of the flatten (dihedral) regulariser."""
    sigma: float = 1e-4
    """SoftRas sigma of the training renders."""
    encoder_dim: int = 512
    """Image code size (ResNet-18 features -> Linear 512 -> code)."""
    template_level: int = 3
    """Icosphere level of the template (3: URA's 642 vertices / 1280 faces)."""

    def validate(self) -> None:
        """Positive sizes and sigma; non-negative weights."""
        if self.encoder_dim < 1 or self.sigma <= 0:
            raise ValueError("encoder_dim must be >= 1 and sigma > 0")
        if self.laplacian_weight < 0 or self.flatten_weight < 0:
            raise ValueError("laplacian_weight and flatten_weight must be >= 0")
        if not 0 <= self.template_level <= 5:
            raise ValueError(f"template_level: must lie in [0, 5], got {self.template_level}")


@dataclass(frozen=True)
class PoseSupervisionSettings:
    """How URA's pseudo poses (``predict_poses``) guide the SDF viewpoint estimator (``poseless``).

    Used when ``pose_source`` is ``pseudo`` (or ``gt``). The target azimuth is the
    table's (Kato convention, ShapeClipper azimuth = -Kato azimuth) plus a learned
    global offset (``learn_offset``): the GAN's canonical frame is arbitrary in
    azimuth, while the SDF's mirror plane is fixed at x = 0.
    """

    weight: float = 1.0
    """Weight of the azimuth loss mean(1 - cos(predicted - target))."""
    elevation_weight: float = 0.0
    """Weight of the same loss on the elevation against ``elevation_deg`` (pseudo) or GT (gt)."""
    decay_iterations: int = 0
    """Both weights fall linearly to 0 over this many main-loop iterations (0: constant)."""
    init_iterations: int = 0
    """For the first N main-loop iterations render at the target pose (azimuth + offset,
    target elevation, no roll, dataset distance) instead of the estimator's."""
    learn_offset: bool = True
    """Learn one global azimuth offset added to the pseudo azimuths (pseudo only)."""

    def validate(self) -> None:
        """Non-negative weights and counts."""
        if min(self.weight, self.elevation_weight) < 0:
            raise ValueError("weight and elevation_weight must be >= 0")
        if min(self.decay_iterations, self.init_iterations) < 0:
            raise ValueError("decay_iterations and init_iterations must be >= 0")


@dataclass(frozen=True)
class SdfReconSettings:
    """ShapeClipper's SDF reconstructor (volume rendering; defaults: REFERENCE "ShapeClipper")."""

    encoder: Literal["resnet18", "resnet34"] = "resnet34"
    """Image encoder of the shape and colour codes (ShapeClipper: ResNet-34)."""
    encoder_weights: str = ""
    """Local torchvision ImageNet weights of ``encoder``; '' = random init."""
    viewpoint_encoder: Literal["resnet18", "resnet34"] = "resnet18"
    """Backbone of the separate viewpoint estimator (ShapeClipper: ResNet-18)."""
    viewpoint_encoder_weights: str = ""
    """Local torchvision ImageNet weights of ``viewpoint_encoder``; '' = random init."""
    input_size: int = 224
    """Side the white-background input image is resized to (0: keep the dataset size)."""
    code_dim: int = 64
    """Size of the shape code and of the colour code."""
    field_width: int = 64
    """Width of the SDF MLP's hidden layers."""
    field_layers: int = 5
    """Hidden layers of the SDF MLP (inputs skip into layers 1 and 2)."""
    color_layers: int = 3
    """Hidden layers of the colour MLP."""
    n_frequencies: int = 6
    """Positional-encoding frequencies."""
    symmetric: bool = True
    """Fields mirror-symmetric about x = 0 (x -> |x|)."""
    rays_per_image: int = 512
    """Rays rendered per image and iteration (boundary-weighted sampling)."""
    n_samples: int = 64
    """Uniform samples per ray."""
    ray_offset: float = 5.0
    """Rays are drawn with probability proportional to 1 / (boundary distance + offset)."""
    bound_margin: float = 0.9
    """near/far = camera distance -/+ this (covers the [-0.5, 0.5]^3 box's circumsphere, 0.866)."""
    beta_init: float = 0.1
    """Initial Laplace scale of the SDF -> density map."""
    camera_fov_deg: float = 14.250032697
    """Full field of view when the dataset records no camera (ShapeClipper: focal 4 W)."""
    camera_distance: float = 5.0
    """Camera distance when the dataset records no camera (ShapeClipper: 5)."""
    scale_range: float = 0.2
    """Predicted distance scale is 1 + scale_range * tanh(.)."""
    rgb_weight: float = 1.0
    """Weight of the RGB MSE."""
    mask_weight: float = 0.5
    """Weight of the mask soft-IoU loss."""
    normals: bool = True
    """Use the monocular normal maps (estimate_normals): normal losses on."""
    normal_weight: float = 0.01
    """Weight of the normal loss."""
    normal_l1_weight: float = 5.0
    """Per ray: normal_l1_weight * |n_pred - n_gt|_1 + (1 - cos)."""
    outlier_dropout: float = 0.2
    """Fraction of normal-loss rays with the largest (1 - cos) dropped per batch (noise tolerance)."""
    eikonal_weight: float = 0.03
    """Weight of the eikonal loss."""
    eikonal_points: int = 512
    """Uniform eikonal points in [-1, 1]^3 per image (plus one sample per ray)."""
    ssc: bool = True
    """Semantic shape consistency with the CLIP kNN table (build_knn)."""
    ssc_temperature: float = 4.0
    """Neighbour drawn with probability proportional to (1 - maskIoU)^temperature."""
    ssc_rgb_weight: float = 1.0
    """Weight of the neighbour RGB MSE."""
    ssc_mask_weight: float = 0.5
    """Weight of the neighbour mask soft-IoU loss."""
    ssc_normal_weight: float = 0.01
    """Weight of the neighbour normal loss (when ``normals``)."""
    azimuth_prior_weight: float = 0.1
    """Weight of the azimuth-uniform EMD prior."""
    camera_margin_weight: float = 0.01
    """Weight of the hinge on |elevation|, |roll| beyond 90 deg - ``camera_margin_deg``."""
    camera_margin_deg: float = 5.0
    """Slack of the camera margin hinge (degrees before 90)."""
    camera_symmetry_weight: float = 0.1
    """Weight of the flipped-image viewpoint consistency."""
    sphere_iterations: int = 2000
    """Sphere pre-training iterations before the main loop (part of the run's step count)."""
    sphere_points: int = 10000
    """Points per sample of the sphere pre-training SDF MSE."""
    sphere_radius: float = 0.5
    """Radius of the pre-training sphere."""
    d2_image_size: int = 32
    """Side of the full-image mask renders fed to the view discriminator."""
    d2_samples: int = 32
    """Samples per ray of those renders."""
    grid_resolution: int = 101
    """Mesh extraction grid samples per axis at prediction (evaluate may override it)."""
    grid_bound: float = 0.6
    """Mesh extraction grid half-side."""
    pose_supervision: PoseSupervisionSettings = field(default_factory=PoseSupervisionSettings)
    """Pseudo/GT pose guidance of the viewpoint estimator (pose_source pseudo or gt)."""

    def validate(self) -> None:
        """Sizes positive; weights non-negative; fractions in range."""
        for name in ("code_dim", "field_width", "field_layers", "color_layers", "rays_per_image"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.field_layers < 3:
            raise ValueError(
                f"field_layers: must be >= 3 (skips into 1 and 2), got {self.field_layers}"
            )
        if self.n_samples < 2 or self.d2_samples < 2 or self.grid_resolution < 2:
            raise ValueError("n_samples, d2_samples and grid_resolution must be >= 2")
        if self.input_size < 0 or (0 < self.input_size < 16):
            raise ValueError(f"input_size: must be 0 or >= 16, got {self.input_size}")
        if self.d2_image_size < 16:
            raise ValueError(f"d2_image_size: must be >= 16, got {self.d2_image_size}")
        if not 0.0 <= self.outlier_dropout < 1.0:
            raise ValueError(f"outlier_dropout: must lie in [0, 1), got {self.outlier_dropout}")
        weights = [
            getattr(self, f.name) for f in dataclasses.fields(self) if f.name.endswith("_weight")
        ]
        if min(weights) < 0 or self.ssc_temperature < 0:
            raise ValueError("loss weights and ssc_temperature must be >= 0")
        if min(self.sphere_iterations, self.sphere_points - 1, self.eikonal_points) < 0:
            raise ValueError(
                "sphere_iterations, eikonal_points must be >= 0 and sphere_points >= 1"
            )
        if min(self.ray_offset, self.bound_margin, self.beta_init, self.grid_bound) <= 0:
            raise ValueError("ray_offset, bound_margin, beta_init and grid_bound must be > 0")
        if not 0 < self.camera_fov_deg < 180 or self.camera_distance <= self.bound_margin:
            raise ValueError(
                "camera_fov_deg must lie in (0, 180) and camera_distance > bound_margin"
            )
        if not 0 <= self.scale_range < 1 or not 0 <= self.camera_margin_deg < 90:
            raise ValueError("scale_range must lie in [0, 1) and camera_margin_deg in [0, 90)")


@dataclass(frozen=True)
class TrainSubsetSettings:
    """Train on the views near a few azimuths only (URA Fig. 5: sparse, non-uniform poses).

    Selects by the manifest's ground-truth azimuth, so it needs a dataset that
    records one (the synthetic data, ShapeNet/NMR); the reconstructor still sees no
    pose. Evaluation uses the whole test split, as in the paper.
    """

    azimuths_deg: tuple[float, ...] = ()
    """Keep train items whose azimuth lies within ``width_deg / 2`` of one of these
    (Kato convention, degrees); empty: the whole train split."""
    width_deg: float = 15.0
    """Width of each kept azimuth window (URA: one of 24 views, 15 degrees)."""

    def validate(self) -> None:
        """A positive width below 360 degrees."""
        if not 0.0 < self.width_deg < 360.0:
            raise ValueError(f"width_deg: must lie in (0, 360), got {self.width_deg}")


@dataclass(frozen=True)
class ReconSettings:
    """The resolved settings of one ``train_recon`` experiment."""

    representation: Literal["mesh", "sdf"] = "mesh"
    """mesh: URA's deformed icosphere; sdf: ShapeClipper's SDF + volume rendering."""
    pose_source: Literal["gt", "joint", "pseudo"] = "pseudo"
    """gt: dataset poses (cheat baseline); joint: predicted with the shape from the
    re-projection alone (B/Lu); pseudo: the predict_poses table (URA)."""
    iterations: int = 250_000
    """Reconstructor iterations (URA stage c)."""
    batch_size: int = 32
    """Images per iteration."""
    lr: float = 1e-4
    """Adam learning rate of the reconstructor."""
    lr_milestones: tuple[int, ...] = (150_000, 200_000)
    """Iterations at which learning rates are multiplied by ``lr_gamma``."""
    lr_gamma: float = 0.5
    """Learning-rate factor at each milestone."""
    betas: tuple[float, float] = (0.9, 0.999)
    """Adam betas."""
    encoder: Literal["resnet18", "resnet34"] = "resnet18"
    """Image encoder (torchvision ResNet)."""
    encoder_weights: str = ""
    """Local path to torchvision ImageNet weights; '' = random init (recorded in the artifact)."""
    elevation_deg: float = 30.0
    """Elevation of training renders (URA: fixed 30 deg)."""
    log_every: int = 50
    """Append losses to metrics.jsonl every this many iterations."""
    checkpoint_every: int = 1000
    """Write a resumable checkpoint every this many iterations."""
    amp: bool = False
    """Mixed precision (bf16 autocast of the networks) on CUDA (ignored on CPU)."""
    keep_last: int = 2
    """Resumable checkpoints kept in the resume folder."""
    render_items: int = 8
    """Training items shown (input | mask | render at the used pose) in renders.png."""
    mesh: MeshReconSettings = field(default_factory=MeshReconSettings)
    """Mesh representation settings."""
    sdf: SdfReconSettings = field(default_factory=SdfReconSettings)
    """SDF representation settings (ShapeClipper, ``poseless``)."""
    view_discriminator: ViewDiscriminatorSettings = field(default_factory=ViewDiscriminatorSettings)
    """URA's view discriminator D2."""
    train_subset: TrainSubsetSettings = field(default_factory=TrainSubsetSettings)
    """Train on a sparse azimuth subset of the train split (robustness benchmark)."""

    @property
    def uses_pseudo_poses(self) -> bool:
        """Whether the experiment reads the predict_poses table."""
        return self.pose_source == "pseudo"

    @property
    def uses_knn(self) -> bool:
        """Whether the experiment reads the build_knn table (SDF with SSC)."""
        return self.representation == "sdf" and self.sdf.ssc

    @property
    def uses_normals(self) -> bool:
        """Whether the experiment reads the estimate_normals output (SDF with normal losses)."""
        return self.representation == "sdf" and self.sdf.normals

    @property
    def uses_gt_poses(self) -> bool:
        """Whether the experiment needs a dataset with ground-truth poses."""
        return self.pose_source == "gt"

    def validate(self) -> None:
        """Sizes, periods and schedules the trainer relies on."""
        if self.iterations < 0 or self.batch_size < 1:
            raise ValueError("iterations must be >= 0 and batch_size >= 1")
        if min(self.log_every, self.checkpoint_every, self.keep_last) < 1:
            raise ValueError("log_every, checkpoint_every and keep_last must be >= 1")
        if self.lr <= 0 or self.render_items < 0:
            raise ValueError("lr must be > 0 and render_items >= 0")
        if list(self.lr_milestones) != sorted(self.lr_milestones):
            raise ValueError(f"lr_milestones: must be increasing, got {list(self.lr_milestones)}")


EXPERIMENTS: dict[str, dict[str, Any]] = {
    "bl_gt_pose": {"representation": "mesh", "pose_source": "gt"},
    "bl_unsup": {"representation": "mesh", "pose_source": "joint"},
    "ura": {
        "representation": "mesh",
        "pose_source": "pseudo",
        "view_discriminator": {"enabled": True, "pose_aware": False},
    },
    "ura_pad": {
        "representation": "mesh",
        "pose_source": "pseudo",
        "view_discriminator": {"enabled": True, "pose_aware": True},
    },
    # URA Fig. 5's third subset: views {0, 4, 5, 6, 12, 18} of 24 (sparse, non-uniform)
    "ura_sparse_azimuth": {
        "representation": "mesh",
        "pose_source": "pseudo",
        "view_discriminator": {"enabled": True, "pose_aware": False},
        "train_subset": {"azimuths_deg": [0.0, 60.0, 75.0, 90.0, 180.0, 270.0]},
    },
    "shapeclipper": {"representation": "sdf", "pose_source": "joint"},
    "shapeclipper_no_ssc": {"representation": "sdf", "pose_source": "joint", "sdf": {"ssc": False}},
    "shapeclipper_no_normal": {
        "representation": "sdf",
        "pose_source": "joint",
        "sdf": {"normals": False},
    },
    "shapeclipper_no_noise_tol": {
        "representation": "sdf",
        "pose_source": "joint",
        "sdf": {"outlier_dropout": 0.0},
    },
    "shapeclipper_gt_pose": {"representation": "sdf", "pose_source": "gt"},
    "poseless": {
        "representation": "sdf",
        "pose_source": "pseudo",
        "view_discriminator": {"enabled": True, "pose_aware": False},
        "sdf": {"pose_supervision": {"weight": 1.0, "init_iterations": 1000}},
    },
    "poseless_no_view_d": {
        "representation": "sdf",
        "pose_source": "pseudo",
        "view_discriminator": {"enabled": False},
        "sdf": {"pose_supervision": {"weight": 1.0, "init_iterations": 1000}},
    },
    "poseless_no_pseudo_pose": {
        "representation": "sdf",
        "pose_source": "joint",
        "view_discriminator": {"enabled": True, "pose_aware": False},
    },
    "poseless_no_ssc": {
        "representation": "sdf",
        "pose_source": "pseudo",
        "view_discriminator": {"enabled": True, "pose_aware": False},
        "sdf": {"ssc": False, "pose_supervision": {"weight": 1.0, "init_iterations": 1000}},
    },
}
"""Built-in experiments (DESIGN.md): each is a partial ReconSettings."""


def deep_merge(base: Mapping, override: Mapping) -> dict:
    """Recursive dict merge; ``override`` wins. Neither input is modified."""
    out = dict(base)
    for k, v in override.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


@dataclass(frozen=True)
class TrainReconConfig:
    """Stage ``train_recon``: which experiments run, and their settings.

    An experiment's settings are ``common``, then the built-in definition of
    its name (``EXPERIMENTS``), then ``experiments[name]`` merged on top.
    """

    run: tuple[str, ...] = ("bl_gt_pose", "bl_unsup", "ura")
    """Experiments the workflow trains and evaluates."""
    seeds: tuple[int, ...] = (0,)
    """Seeds per experiment (tables show mean +/- std over them)."""
    common: dict[str, Any] = field(default_factory=dict)
    """Overrides of ReconSettings applied to every experiment (schedules, sizes)."""
    experiments: dict[str, Any] = field(default_factory=dict)
    """Per-experiment overrides, or new experiments (a mapping of ReconSettings keys)."""

    def validate(self) -> None:
        """Every experiment in ``run`` resolves to valid settings; names are unique."""
        if len(set(self.run)) != len(self.run):
            raise ValueError(f"run: duplicate experiment names in {list(self.run)}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds: must be non-empty and unique, got {list(self.seeds)}")
        for name in self.run:
            self.resolve(name)

    def resolve(self, name: str) -> ReconSettings:
        """The settings of experiment ``name``."""
        if name not in EXPERIMENTS and name not in self.experiments:
            raise ValueError(
                f"run: unknown experiment {name!r} (built in: {sorted(EXPERIMENTS)}; "
                "or define it under train_recon.experiments)"
            )
        merged = deep_merge(
            deep_merge(to_dict(self.common), EXPERIMENTS.get(name, {})),
            to_dict(self.experiments.get(name, {})),
        )
        try:
            return from_dict(ReconSettings, merged, f"train_recon[{name}]")
        except ConfigError as exc:
            raise ValueError(str(exc)) from None


@dataclass(frozen=True)
class GanHealthConfig:
    """Collapse and quality checks of the trained GAN (``train_gan``'s health.json)."""

    n_codes: int = 32
    """Codes z rendered for the checks."""
    n_azimuths: int = 8
    """Evenly spaced azimuths (over the training range) at which every code is rendered."""
    n_real: int = 256
    """Training masks drawn (without replacement) for the real reference statistics."""
    feature_size: int = 16
    """Side of the downsampled silhouettes compared by the MMD."""
    area_bins: int = 20
    """Bins of the mask-area histograms over [0, 1] of the image."""
    min_diversity_ratio: float = 0.1
    """Fail below: shape diversity (mean 1-IoU across codes at one azimuth) / real diversity."""
    min_view_variation: float = 0.02
    """Fail below: mean 1-IoU across azimuths of one code (0 disables: symmetric categories)."""
    max_area_tv: float = 0.8
    """Fail above: total-variation distance of the fake and real mask-area histograms."""
    max_degenerate_fraction: float = 0.25
    """Fail above: fraction of sampled meshes that are degenerate (point, saturated, ...)."""
    min_extent: float = 0.02
    """A mesh whose largest bounding-box side is below this has collapsed to a point."""
    max_bound_fraction: float = 0.9
    """A mesh with more than this fraction of coordinates at the +-0.5 bound is saturated."""
    fail_on_collapse: bool = True
    """Raise TrainingError (after writing health.json and the metrics) when a check fails."""

    def validate(self) -> None:
        """Positive sample counts; thresholds in range."""
        if self.n_codes < 2 or self.n_azimuths < 2 or self.n_real < 2:
            raise ValueError("n_codes, n_azimuths and n_real must be >= 2 (pairwise statistics)")
        if self.feature_size < 1 or self.area_bins < 1:
            raise ValueError("feature_size and area_bins must be >= 1")
        for name in ("max_area_tv", "max_degenerate_fraction", "max_bound_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}: must lie in [0, 1], got {getattr(self, name)}")
        if min(self.min_diversity_ratio, self.min_view_variation, self.min_extent) < 0:
            raise ValueError("min_diversity_ratio, min_view_variation and min_extent must be >= 0")


@dataclass(frozen=True)
class TrainGanConfig:
    """Stage ``train_gan``: URA's pose-independent mesh GAN (defaults: the paper's ShapeNet run).

    REFERENCE "URA" stage (a): 500k iterations, batch 32, Adam (0.9, 0.999), lr
    1e-4 for G and D halved at 200k/300k/400k, n_critic 3, WGAN-GP lambda 10,
    G loss -D(fake) + 5e-3 (Laplacian + flatten) with the adaptive weight,
    fakes rendered at elevation 30 deg and azimuth ~ U[0, 360).
    """

    iterations: int = 500_000
    """Total iterations (D steps)."""
    batch_size: int = 32
    """Real and fake silhouettes per D step; fakes per G step."""
    lr: float = 1e-4
    """Adam learning rate of G and D."""
    lr_milestones: tuple[int, ...] = (200_000, 300_000, 400_000)
    """Iterations at which both learning rates are multiplied by ``lr_gamma``."""
    lr_gamma: float = 0.5
    """Learning-rate factor at each milestone."""
    betas: tuple[float, float] = (0.9, 0.999)
    """Adam betas."""
    n_critic: int = 3
    """G steps every ``n_critic`` iterations (D every iteration)."""
    gp_weight: float = 10.0
    """WGAN-GP lambda."""
    gp_mode: Literal["per_sample", "per_pixel"] = "per_sample"
    """Gradient norm per sample (Gulrajani) or per pixel (URA code defect)."""
    laplacian_weight: float = 5e-3
    """Weight of the Laplacian term (CUB: 5e-2)."""
    flatten_weight: float = 5e-3
    """Weight of the flatten term (CUB: 5e-3)."""
    adaptive_weight: bool = True
    """Rescale the geometry term by |mean d(-D)/dW_bias| / adaptive_reference every G step."""
    adaptive_reference: float = 2e-5
    """Denominator of the adaptive weight."""
    z_dim: int = 128
    """Generator code size."""
    z_std: float = 0.33
    """Standard deviation of the generator codes, z ~ N(0, z_std^2)."""
    template_level: int = 3
    """Icosphere level of the template (3: 642 vertices, 1280 faces)."""
    image_size: int = 64
    """Side of the rendered and real silhouettes (training masks are resized to it)."""
    sigma: float = 1e-4
    """SoftRas silhouette sharpness of the fake renders."""
    per_category: bool = True
    """One generator per category of the train split (URA trains one model per category);
    false: one generator for all images."""
    binarize_real: bool = True
    """Threshold the resized real masks at 0.5: fakes at sigma 1e-4 are near-binary, and
    area-resized reals have fractional edges that let the critic win on anti-aliasing alone."""
    azimuth_range_deg: tuple[float, float] = (0.0, 360.0)
    """Fake azimuths ~ U[lo, hi) degrees."""
    elevation_deg: float = 30.0
    """Elevation of the fake views in degrees."""
    camera: Literal["dataset", "config"] = "dataset"
    """dataset: distance/fov from the prepared meta.json when recorded, else the two below."""
    distance: float = 2.732
    """Camera distance (used when ``camera`` is config or the dataset records none)."""
    fov_deg: float = 30.0
    """Full field of view in degrees (same rule as ``distance``)."""
    n_samples: int = 8
    """Codes z shown in samples.png (one row each)."""
    n_views: int = 6
    """Evenly spaced azimuths shown per code in samples.png (one column each)."""
    log_every: int = 100
    """Append a metrics record every this many iterations."""
    checkpoint_every: int = 5000
    """Write a resumable checkpoint (to the resume dir) every this many iterations."""
    keep_last: int = 2
    """Resumable checkpoints kept."""
    mixed_precision: Literal["off", "bf16", "fp16"] = "off"
    """Autocast of the networks on CUDA (the renderer stays float32; off on CPU); prefer bf16."""
    progress: bool = True
    """Show a progress bar."""
    health: GanHealthConfig = field(default_factory=GanHealthConfig)
    """Collapse and quality checks after training."""

    def validate(self) -> None:
        """Sizes, schedule, camera and azimuth range must be valid."""
        for name in ("iterations", "batch_size", "n_critic", "log_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.keep_last < 1 or self.n_samples < 0 or self.n_views < 1:
            raise ValueError("keep_last and n_views must be >= 1 and n_samples >= 0")
        if self.image_size < 16:
            raise ValueError(
                f"image_size: must be >= 16 (the discriminator's trunk), got {self.image_size}"
            )
        lo, hi = self.azimuth_range_deg
        if not 0.0 <= lo < hi <= 360.0:
            raise ValueError(f"azimuth_range_deg: need 0 <= lo < hi <= 360, got {[lo, hi]}")
        if self.lr <= 0 or self.sigma <= 0 or self.distance <= 0 or not 0 < self.fov_deg < 180:
            raise ValueError("lr, sigma and distance must be > 0 and fov_deg in (0, 180)")
        if min(self.gp_weight, self.laplacian_weight, self.flatten_weight) < 0:
            raise ValueError("gp_weight, laplacian_weight and flatten_weight must be >= 0")
        if self.z_dim < 1 or self.z_std <= 0 or self.adaptive_reference <= 0:
            raise ValueError("z_dim must be >= 1, z_std and adaptive_reference > 0")
        if not 0 <= self.template_level <= 5:
            raise ValueError(f"template_level: must lie in [0, 5], got {self.template_level}")
        if list(self.lr_milestones) != sorted(self.lr_milestones):
            raise ValueError(f"lr_milestones: must be increasing, got {list(self.lr_milestones)}")


@dataclass(frozen=True)
class TrainPoseConfig:
    """Stage ``train_pose``: URA's pseudo pose regressor, trained on renders of the frozen GAN.

    Defaults are URA's stage (b) (REFERENCE "URA"): 100k iterations, batch 32,
    Adam (0.9, 0.999), lr 1e-4 halved at 50k and 75k, renders of fresh
    G(z) at elevation 30 deg and azimuth ~ U[0, 360).
    """

    iterations: int = 100_000
    """Total iterations (regressor updates)."""
    batch_size: int = 32
    """Fresh G(z) renders per iteration."""
    lr: float = 1e-4
    """Adam learning rate."""
    lr_milestones: tuple[int, ...] = (50_000, 75_000)
    """Iterations at which the learning rate is multiplied by ``lr_gamma``."""
    lr_gamma: float = 0.5
    """Learning-rate factor at each milestone."""
    betas: tuple[float, float] = (0.9, 0.999)
    """Adam betas."""
    head: Literal["sigmoid", "cossin"] = "sigmoid"
    """Regressor output: sigmoid * 360 (paper) or a normalised (cos, sin) pair."""
    image_size: int = 64
    """Side of the training renders and of the regressor's input."""
    sigma: float = 1e-4
    """SoftRas silhouette sharpness of the training renders."""
    azimuth_range_deg: tuple[float, float] = (0.0, 360.0)
    """Training azimuths ~ U[lo, hi) degrees."""
    elevation_deg: float = 30.0
    """Elevation of the training renders in degrees."""
    camera: Literal["dataset", "config"] = "dataset"
    """dataset: distance/fov from the prepared meta.json when recorded, else the two below."""
    distance: float = 2.732
    """Camera distance (used when ``camera`` is config or the dataset records none)."""
    fov_deg: float = 30.0
    """Full field of view in degrees (same rule as ``distance``)."""
    n_samples: int = 8
    """Training renders shown in samples.png with their true and predicted azimuths."""
    log_every: int = 100
    """Append a metrics record every this many iterations."""
    checkpoint_every: int = 2000
    """Write a resumable checkpoint (to the resume dir) every this many iterations."""
    keep_last: int = 2
    """Resumable checkpoints kept."""
    mixed_precision: Literal["off", "bf16", "fp16"] = "off"
    """Autocast of the regressor on CUDA (the renderer stays float32; off on CPU)."""
    progress: bool = True
    """Show a progress bar."""

    def validate(self) -> None:
        """Sizes, schedule and azimuth range must be valid."""
        for name in ("iterations", "batch_size", "log_every", "checkpoint_every", "keep_last"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.image_size < 16:
            raise ValueError(
                f"image_size: must be >= 16 (the regressor's trunk), got {self.image_size}"
            )
        lo, hi = self.azimuth_range_deg
        if not 0.0 <= lo < hi <= 360.0:
            raise ValueError(f"azimuth_range_deg: need 0 <= lo < hi <= 360, got {[lo, hi]}")
        if self.lr <= 0 or self.sigma <= 0 or self.distance <= 0 or not 0 < self.fov_deg < 180:
            raise ValueError("lr, sigma and distance must be > 0 and fov_deg in (0, 180)")
        if self.n_samples < 0:
            raise ValueError(f"n_samples: must be >= 0, got {self.n_samples}")


@dataclass(frozen=True)
class PredictPosesConfig:
    """Stage ``predict_poses``: label every prepared image's mask with an azimuth (``method``)."""

    method: Literal["regressor", "gan_retrieval"] = "regressor"
    """regressor: URA's trained pose regressor. gan_retrieval (not in URA): the azimuth of
    the most similar (mask IoU) render of the category's GAN, over ``retrieval_codes``
    samples at every ``retrieval_step_deg``, at the image size and camera the GAN was
    trained with (train_gan's record)."""
    retrieval_codes: int = 8
    """gan_retrieval: generator samples rendered at each azimuth."""
    retrieval_step_deg: float = 5.0
    """gan_retrieval: azimuth step of the rendered bank, degrees."""
    retrieval_prior: Literal["none", "gan"] = "none"
    """gan_retrieval: none: each mask takes the azimuth of its most similar render. gan
    (not in URA): each category's retrieved azimuths are made to follow the pose prior
    its GAN was trained under (uniform over ``train_gan.azimuth_range_deg``; URA's
    critic matches the real masks to renders at that prior, so the real azimuths are
    taken to follow it too): entropic optimal transport between the category's items
    and the bank's azimuths (:func:`poseless.train.predict_poses.prior_matched_bins`).
    Each item then takes the azimuth maximising its IoU plus a per-azimuth offset, so a
    GAN whose renders favour one half of the circle (front/back flips of a whole arc of
    views) cannot pile every item onto that half. Needs ``method: gan_retrieval``."""
    retrieval_prior_epsilon: float = 0.01
    """gan_retrieval, prior gan: the transport's entropic regularisation, in IoU units
    (smaller: closer to the hard assignment)."""
    retrieval_prior_strength: float | None = None
    """gan_retrieval, prior gan: null holds the azimuth marginal to the prior exactly
    (balanced transport); a positive value only penalises the departure from it (KL
    weight, IoU units: unbalanced transport, smaller is looser)."""
    frame: Literal["generator", "mirror"] = "generator"
    """generator: azimuths in the generator's own canonical frame (URA). mirror (not in
    URA): each category's azimuths rotated so that its mirror plane is the plane x = 0
    the SDF fields are symmetric about (``train_recon...sdf.symmetric``); the plane is
    found from the data, as the azimuth c with a + a_flipped = 2c for most items, where
    a_flipped is the method's azimuth for the horizontally flipped mask."""
    frame_tolerance_deg: float = 15.0
    """mirror: items whose a + a_flipped lies within this of the mode 2c refine c."""
    batch_size: int = 256
    """Masks per regressor forward pass."""
    allow_reflection: bool = True
    """Whether the evaluation's global alignment may also reflect azimuths (a -> -a)."""
    alignment: Literal["per_category", "all"] = "per_category"
    """Fit the global azimuth offset per category (each its own canonical frame) or once."""
    binarize: bool = True
    """Threshold the resized masks at 0.5, like the near-binary SoftRas renders the regressor
    was trained on (see ``train_gan.binarize_real``)."""
    accuracy_thresholds_deg: tuple[float, ...] = (15.0, 30.0)
    """Accuracy reported at these aligned errors (degrees)."""

    def validate(self) -> None:
        """Batch size, retrieval bank and thresholds must be positive."""
        if self.batch_size < 1:
            raise ValueError(f"batch_size: must be >= 1, got {self.batch_size}")
        if self.retrieval_codes < 1:
            raise ValueError(f"retrieval_codes: must be >= 1, got {self.retrieval_codes}")
        if not 0.0 < self.retrieval_step_deg <= 90.0:
            raise ValueError(
                f"retrieval_step_deg: must be in (0, 90], got {self.retrieval_step_deg}"
            )
        if any(t <= 0 for t in self.accuracy_thresholds_deg):
            raise ValueError("accuracy_thresholds_deg: thresholds must be > 0")
        if not 0.0 < self.frame_tolerance_deg <= 90.0:
            raise ValueError(
                f"frame_tolerance_deg: must be in (0, 90], got {self.frame_tolerance_deg}"
            )
        if self.retrieval_prior != "none" and self.method != "gan_retrieval":
            raise ValueError(
                f"retrieval_prior: {self.retrieval_prior!r} needs method: gan_retrieval, "
                f"got method: {self.method!r}"
            )
        if not self.retrieval_prior_epsilon > 0.0:
            raise ValueError(
                f"retrieval_prior_epsilon: must be > 0, got {self.retrieval_prior_epsilon}"
            )
        strength = self.retrieval_prior_strength
        if strength is not None and not strength > 0.0:
            raise ValueError(f"retrieval_prior_strength: must be > 0 or null, got {strength}")


@dataclass(frozen=True)
class EvaluateConfig:
    """Stage ``evaluate``: score one experiment's test reconstructions under the alignment protocols.

    Maps onto :class:`poseless.evaluate.align.EvalSettings` (points, thresholds,
    azimuth grid, ICP) and :class:`poseless.evaluate.extract.ExtractSettings` (SDF grid).
    """

    protocols: tuple[str, ...] = ("azimuth_search", "global", "view_centric")
    """Protocols to run (azimuth_search, global, view_centric, icp); add icp to turn ICP on."""
    split: Literal["test", "val"] = "test"
    """Split that is scored."""
    n_items: int = 0
    """Items scored (the first n of the split in manifest order; 0: the whole split)."""
    gt_voxels: Literal["mesh", "dataset"] = "mesh"
    """mesh: voxelise the GT mesh (when there is one) with the predictions' voxeliser;
    dataset: the dataset's own voxels (URA on ShapeNet)."""
    global_criterion: Literal["iou", "cd"] = "iou"
    """What the ``global`` rotation maximises on validation items: voxel IoU or -Chamfer."""
    global_flip: bool = False
    """Whether ``global`` may also mirror x -> -x."""
    global_per_category: bool = True
    """Fit one ``global`` rotation per category (each may have its own canonical frame)."""
    global_fit_items: int = 0
    """Validation items per category used to fit ``global`` (0: all)."""
    n_points: int = 10_000
    """Surface points per mesh for Chamfer / F-score (ShapeClipper: 100k)."""
    search_points: int = 2048
    """Points used to choose azimuths and fit ICP."""
    fscore_thresholds: tuple[float, ...] = (0.01, 0.05, 0.1)
    """F-score thresholds."""
    azimuth_step_deg: float = 5.0
    """Azimuth grid of azimuth_search and global (5 deg: URA's 72 candidates)."""
    icp_iterations: int = 100
    """ICP iterations per initialisation."""
    icp_scale: bool = False
    """ICP fits a similarity (with scale) instead of a rigid transform."""
    grid_resolution: int = 101
    """SDF models: grid samples per axis of mesh extraction (ShapeClipper: 101)."""
    grid_bound: float = 0.6
    """SDF models: the extraction grid covers [-grid_bound, grid_bound]^3."""
    pose_thresholds_deg: tuple[float, ...] = (15.0, 30.0)
    """Pose accuracy thresholds (degrees) after the best global azimuth alignment."""
    batch_size: int = 16
    """Images per reconstructor call."""
    workers: int = 1
    """Processes scoring items in parallel (1: in-process; results keep item order)."""
    sample_meshes: int = 8
    """Predicted meshes written as .obj for the first n scored items (report samples)."""

    def validate(self) -> None:
        """Known, unique protocols; positive sizes."""
        known = ("azimuth_search", "global", "view_centric", "icp")
        bad = [p for p in self.protocols if p not in known]
        if bad or not self.protocols or len(set(self.protocols)) != len(self.protocols):
            raise ValueError(
                f"protocols: must be a non-empty list of distinct names from {list(known)}, "
                f"got {list(self.protocols)}"
            )
        if min(self.n_points, self.search_points, self.batch_size, self.workers) < 1:
            raise ValueError("n_points, search_points, batch_size and workers must be >= 1")
        if min(self.n_items, self.global_fit_items, self.sample_meshes) < 0:
            raise ValueError("n_items, global_fit_items and sample_meshes must be >= 0")
        if self.grid_resolution < 2 or self.grid_bound <= 0 or self.icp_iterations < 1:
            raise ValueError("grid_resolution must be >= 2, grid_bound > 0, icp_iterations >= 1")
        if any(t <= 0 for t in self.fscore_thresholds + self.pose_thresholds_deg):
            raise ValueError("fscore_thresholds and pose_thresholds_deg must be > 0")


@dataclass(frozen=True)
class ReportConfig:
    """Stage ``report``: one static HTML page (and summary.md) over every upstream artifact."""

    sample_items: int = 6
    """Test items shown per experiment (input, reconstruction, novel views, turntable)."""
    render_size: int = 128
    """Side of the ray-cast renders of reconstructions."""
    novel_views_deg: tuple[float, ...] = (90.0, 180.0, 270.0)
    """Azimuth offsets (degrees) of the novel views from the input view."""
    turntable_frames: int = 24
    """Frames of each turntable GIF."""
    turntable_ms: int = 80
    """Milliseconds per turntable frame."""
    metrics: tuple[str, ...] = ("iou32", "cd", "fscore@0.01", "fscore@0.05", "fscore@0.1")
    """Metrics (before '@protocol') shown in the results table."""
    pose_bins: int = 36
    """Histogram bins of the predicted-vs-true azimuth plots."""
    knn_items: int = 4
    """Query images shown with their neighbours in the kNN sheet."""
    notes: tuple[str, ...] = ()
    """Free-text paragraphs (e.g. why a claim does not hold) printed under the claims table."""

    def validate(self) -> None:
        """Positive sizes."""
        if self.render_size < 8 or self.turntable_frames < 1 or self.turntable_ms < 1:
            raise ValueError("render_size must be >= 8, turntable_frames and turntable_ms >= 1")
        if min(self.sample_items, self.knn_items) < 0 or self.pose_bins < 1:
            raise ValueError("sample_items and knn_items must be >= 0, pose_bins >= 1")
        if not self.metrics:
            raise ValueError("metrics: name at least one metric")


@dataclass(frozen=True)
class Params:
    """All sections of a params file. Sections are added by the stages that use them."""

    seed: int = 0
    """Global seed; every stage derives its generators from it."""
    prepare_data: PrepareDataConfig = field(default_factory=PrepareDataConfig)
    """Stage ``prepare_data``."""
    embed_images: EmbedImagesConfig = field(default_factory=EmbedImagesConfig)
    """Stage ``embed_images``."""
    build_knn: BuildKnnConfig = field(default_factory=BuildKnnConfig)
    """Stage ``build_knn``."""
    estimate_normals: EstimateNormalsConfig = field(default_factory=EstimateNormalsConfig)
    """Stage ``estimate_normals``."""
    train_gan: TrainGanConfig = field(default_factory=TrainGanConfig)
    """Stage ``train_gan`` (URA stage a)."""
    train_pose: TrainPoseConfig = field(default_factory=TrainPoseConfig)
    """Stage ``train_pose`` (URA stage b)."""
    predict_poses: PredictPosesConfig = field(default_factory=PredictPosesConfig)
    """Stage ``predict_poses``."""
    train_recon: TrainReconConfig = field(default_factory=TrainReconConfig)
    """Stage ``train_recon`` (one job per experiment and seed)."""
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    """Stage ``evaluate`` (one job per experiment and seed)."""
    report: ReportConfig = field(default_factory=ReportConfig)
    """Stage ``report``."""

    def validate(self) -> None:
        """Across sections: a mirror-symmetric SDF field at pseudo poses needs the mirror frame.

        The field is symmetric about x = 0 of the pose frame; in the generator's frame
        (``predict_poses.frame: generator``) the category's mirror plane is anywhere
        (on the bench ~100 deg off), the learnable global offset does not travel that
        far, and the field cannot fit the shapes (chair 3D IoU 0.08 against 0.31).
        """
        if self.predict_poses.frame == "mirror":
            return
        for name in self.train_recon.run:
            s = self.train_recon.resolve(name)
            if s.representation == "sdf" and s.pose_source == "pseudo" and s.sdf.symmetric:
                raise ValueError(
                    f"train_recon.run: {name} trains a mirror-symmetric SDF field "
                    "(sdf.symmetric) at pseudo poses, whose frame puts the mirror plane "
                    "at x = 0 only with predict_poses.frame: mirror; set that (or the "
                    "experiment's sdf.symmetric: false)"
                )


# ---------------------------------------------------------------------------
# Strict construction from plain data
# ---------------------------------------------------------------------------


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _build(tp, value, key: str):
    """Build a value of type ``tp`` from YAML data, strictly."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping for {tp.__name__}, got {value!r}")
        return _build_dataclass(tp, value, key)
    if tp is Any:
        return value
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {list(args)}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _build(arg, value, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(
            f"{key}: {value!r} matches none of {_type_name(tp)} ({'; '.join(errors)})"
        )
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_build(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key}: expected {len(args)} items, got {len(value)}")
        return tuple(_build(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        k_tp, v_tp = args
        return types.MappingProxyType(
            {_build(k_tp, k, key): _build(v_tp, v, f"{key}.{k}") for k, v in value.items()}
        )
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {tp!r}")  # a schema bug, not a user error


def _build_dataclass(cls, data: Mapping, prefix: str):
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(
            f"{where}{unknown[0]}: unknown key (known keys here: {', '.join(sorted(fields))})"
        )
    kwargs = {}
    for name, f in fields.items():
        key = f"{prefix}.{name}" if prefix else name
        if name in data:
            kwargs[name] = _build(hints[name], data[name], key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{key}: required key is missing")
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if check is not None:
        try:
            check()
        except ValueError as exc:
            raise ConfigError(f"{prefix or '<top>'}: {exc}") from exc
    return obj


def from_dict(cls, data: Mapping | None, prefix: str = ""):
    """Build dataclass ``cls`` from a mapping, strictly (unknown keys are errors)."""
    return _build_dataclass(cls, data or {}, prefix)


def to_dict(obj) -> Any:
    """Dataclass (possibly nested) -> plain YAML/JSON-able data."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, tuple | list):
        return [to_dict(v) for v in obj]
    return obj


class SectionView:
    """A :class:`Params` restricted to the sections a stage declared."""

    def __init__(self, params: Params, sections: tuple[str, ...], source: str):
        self._params = params
        self._sections = sections
        self._source = source

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        if name not in self._sections:
            raise AttributeError(
                f"section {name!r} was not declared by this stage (declared: {self._sections}); "
                "add it to the stage's PARAMS so that the workflow reruns it when it changes"
            )
        return getattr(self._params, name)

    def to_dict(self) -> dict:
        """The declared sections as plain data (what artifact folders record)."""
        return {s: to_dict(getattr(self._params, s)) for s in self._sections}


def load_params(path: str | Path, sections: tuple[str, ...] | list[str] | None = None):
    """Load and validate a params file.

    Args:
        path: YAML file (``params.yaml`` or a file from ``config/``).
        sections: if given, return a view restricted to these top-level sections.
    Raises:
        ConfigError: naming the file and the dotted key.
        FileNotFoundError: when the file is missing.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: params file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    try:
        params = from_dict(Params, data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if sections is None:
        return params
    unknown = [s for s in sections if s not in {f.name for f in dataclasses.fields(Params)}]
    if unknown:
        raise ConfigError(f"unknown sections requested: {unknown}")
    return SectionView(params, tuple(sections), str(path))


# ---------------------------------------------------------------------------
# JSON schema (used by the Snakefile's validate(); generated, never hand-edited)
# ---------------------------------------------------------------------------


def _schema_for(tp) -> dict:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        props = {}
        required = []
        for f in dataclasses.fields(tp):
            props[f.name] = _schema_for(hints[f.name])
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                required.append(f.name)
        out = {"type": "object", "properties": props, "additionalProperties": False}
        if tp.__doc__:
            out["description"] = " ".join(tp.__doc__.split())
        if required:
            out["required"] = required
        return out
    if origin is Literal:
        return {"enum": list(args)}
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [_schema_for(a) for a in args]}
    if tp is type(None):
        return {"type": "null"}
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return {"type": "array", "items": _schema_for(args[0])}
        return {
            "type": "array",
            "prefixItems": [_schema_for(a) for a in args],
            "minItems": len(args),
            "maxItems": len(args),
        }
    if origin is dict:
        return {"type": "object", "additionalProperties": _schema_for(args[1])}
    if tp is Any:
        return {}
    return {
        bool: {"type": "boolean"},
        int: {"type": "integer"},
        float: {"type": "number"},
        str: {"type": "string"},
    }[tp]


def json_schema() -> dict:
    """JSON schema of a params file, generated from :class:`Params`."""
    schema = _schema_for(Params)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Poseless params"
    return schema


def dump_schema_yaml() -> str:
    """The schema as the YAML text committed in workflow/schemas/params.schema.yaml."""
    header = (
        "# Generated by `python -m poseless.config` from src/poseless/config.py; do not edit.\n"
    )
    return header + yaml.safe_dump(json.loads(json.dumps(json_schema())), sort_keys=False)


if __name__ == "__main__":  # pragma: no cover - used by `make schema`
    print(dump_schema_yaml(), end="")
