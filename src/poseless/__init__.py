"""Poseless: single-view 3D reconstruction learned from unposed image collections."""

__version__ = "0.1.0"
