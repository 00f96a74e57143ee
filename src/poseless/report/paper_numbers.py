"""The papers' own numbers (REFERENCE.md), each with its protocol and dataset.

A number is comparable with ours only on the same dataset (the prepared
dataset's adapter: ``shapenet_nmr`` for URA, ``pix3d`` for ShapeClipper) and
under the same protocol; :func:`comparable` says so, and the report prints
"not comparable" otherwise (e.g. on the embedded synthetic data).

Caveats kept with the numbers: URA's Chamfer column is printed "x0.01" and its
code has no Chamfer (the paper's distance is likely squared, on 2048 points);
ours is unsquared (ShapeClipper's definition), so even on ShapeNet the CD row is
indicative only. ShapeClipper's numbers are on Pix3D chairs under the
view-centric protocol with 100k points.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PaperNumber:
    """One number of a paper's table."""

    paper: str
    """'URA' or 'ShapeClipper'."""
    method: str
    """The row as the paper names it (B/Lu, URA, Ours, w/o SSC, ...)."""
    experiment: str
    """Our experiment that reproduces the row ('' when we have none, e.g. VPL)."""
    dataset: str
    """Our adapter name of the paper's dataset."""
    subset: str
    """Which part of the dataset ('13-class mean', 'chair', ...)."""
    metric: str
    """Our metric name (before '@protocol')."""
    protocol: str
    """Our protocol name the paper's number was measured under."""
    value: float
    """The number as printed."""
    scale: float = 1.0
    """Printed value x scale = value in our units (URA's CD column is x0.01)."""
    note: str = ""
    """Caveat."""

    @property
    def key(self) -> str:
        """'metric@protocol' of the number."""
        return f"{self.metric}@{self.protocol}"

    @property
    def ours_units(self) -> float:
        """The value in our units."""
        return self.value * self.scale


_URA_CD_NOTE = "paper CD x0.01, likely squared on 2048 points; ours unsquared: indicative only"


def _ura(method, experiment, iou, cd, subset="13-class mean"):
    out = [
        PaperNumber(
            "URA", method, experiment, "shapenet_nmr", subset, "iou32", "azimuth_search", iou
        )
    ]
    if cd is not None:
        out.append(
            PaperNumber(
                "URA",
                method,
                experiment,
                "shapenet_nmr",
                subset,
                "cd",
                "azimuth_search",
                cd,
                0.01,
                _URA_CD_NOTE,
            )
        )
    return out


def _sc(method, experiment, cd, fs=(None, None, None), dataset="pix3d", subset="chair"):
    out = [
        PaperNumber("ShapeClipper", method, experiment, dataset, subset, "cd", "view_centric", cd)
    ]
    for tau, v in zip(("0.01", "0.05", "0.1"), fs):
        if v is not None:
            out.append(
                PaperNumber(
                    "ShapeClipper",
                    method,
                    experiment,
                    dataset,
                    subset,
                    f"fscore@{tau}",
                    "view_centric",
                    v,
                )
            )
    return out


PAPER_NUMBERS: tuple[PaperNumber, ...] = tuple(
    _ura("B/Lu", "bl_unsup", 0.277, 7.97)
    + _ura("B/Ls", "bl_gt_pose", 0.459, 4.47)
    + _ura("VPL", "", 0.505, 2.74)
    + _ura("URA", "ura", 0.489, 3.38)
    + _ura("URA", "ura", 0.521, None, "airplane")
    + _ura("URA", "ura", 0.652, None, "car")
    + _ura("URA", "ura", 0.439, None, "chair")
    + _ura("URA (PAD)", "ura_pad", 0.410, None, "airplane")
    + _ura("URA (PAD)", "ura_pad", 0.344, None, "car")
    + _ura("URA (PAD)", "ura_pad", 0.325, None, "chair")
    + _sc("Ours", "shapeclipper", 0.618, (0.1317, 0.5473, 0.8002))
    + _sc("w/o SSC", "shapeclipper_no_ssc", 0.749, (0.0958, 0.4309, 0.7093))
    + _sc("w/o normal", "shapeclipper_no_normal", 0.766, (0.0815, 0.3913, 0.6982))
    + _sc("w/o noise-tol", "shapeclipper_no_noise_tol", 0.640, (0.1277, 0.5319, 0.7861))
    + _sc("with GT viewpoints", "", 0.418)
    + _sc("Ours", "shapeclipper", 0.693, (None, None, 0.7981), "pascal3d", "mean")
)
"""Every number of REFERENCE.md's "Paper numbers" paragraphs."""


def numbers_for(experiment: str) -> list[PaperNumber]:
    """The paper numbers our ``experiment`` reproduces."""
    return [p for p in PAPER_NUMBERS if p.experiment == experiment]


def comparable(number: PaperNumber, adapter: str) -> tuple[bool, str]:
    """Whether ``number`` can be set beside ours on a dataset prepared by ``adapter``, and why not."""
    if adapter == number.dataset:
        return True, number.note
    if adapter == "synthetic":
        return False, (
            f"not comparable: ours are on the embedded synthetic data, the paper's on {number.dataset}"
        )
    return False, f"not comparable: ours are on {adapter}, the paper's on {number.dataset}"
