"""Readers and writers for the signals the tasks fit: one module per kind of file.

Readers return float arrays with a documented layout and raise ``InputError`` with a one-line
message naming the file and what was expected; writers create parent folders.
"""

from .image import IMAGE_SUFFIXES, list_images, read_image, write_image

__all__ = ["IMAGE_SUFFIXES", "list_images", "read_image", "write_image"]
