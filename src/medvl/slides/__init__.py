"""Whole-slide images: reading (OpenSlide, tifffile), tissue detection, tiling at a resolution,
patch features written as feature bags, and synthetic pyramidal slides (docs/slides.md)."""
