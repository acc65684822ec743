"""Synthetic data: scenes of shapes with instance masks and part/whole structure."""

from .shapes import Scene, make_scene, make_scenes, interior_point  # noqa: F401
