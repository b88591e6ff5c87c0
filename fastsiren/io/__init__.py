"""Readers and writers for the signals the tasks fit: one module per kind of file.

Readers return float arrays with a documented layout and raise ``InputError`` with a one-line
message naming the file and what was expected; writers create parent folders.
"""

from .image import IMAGE_SUFFIXES, list_images, read_image, write_image
from .mesh import MESH_SUFFIXES, read_mesh
from .pointcloud import (
    POINT_CLOUD_SUFFIXES,
    Normalization,
    OrientedPoints,
    read_oriented_points,
)

__all__ = [
    "IMAGE_SUFFIXES", "list_images", "read_image", "write_image",
    "MESH_SUFFIXES", "read_mesh",
    "POINT_CLOUD_SUFFIXES", "Normalization", "OrientedPoints", "read_oriented_points",
]
