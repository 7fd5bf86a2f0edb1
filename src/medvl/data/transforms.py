"""Image transforms written with torch ops (no torchvision).

Every transform maps ``FloatTensor (C, H, W)`` → ``FloatTensor (C, H', W')``. Random
transforms draw only from the ``torch.Generator`` passed to ``__call__``, so a dataset that
seeds one generator per (seed, epoch, index) gets the same augmentation for the same item
regardless of worker count or order. Train and eval pipelines are built explicitly with
:func:`build_transforms` (``train=True`` / ``False``), never inferred.

Horizontal flips swap anatomical left and right (laterality, heart position in chest
radiographs); they are off by default.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from medvl.config.data import DataConfig, TrainTransformConfig

__all__ = [
    "CenterCrop",
    "ColorJitter",
    "Compose",
    "Normalize",
    "RandomHorizontalFlip",
    "RandomResizedCrop",
    "RandomRotation",
    "Resize",
    "Transform",
    "build_transforms",
    "build_view2_transforms",
]


class Transform(Protocol):
    """A callable image transform; random ones use ``generator`` and nothing else."""

    def __call__(self, image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor: ...


def _size2(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


def _check(image: torch.Tensor) -> None:
    if image.ndim != 3:
        raise ValueError(f"transforms expect (C, H, W), got shape {tuple(image.shape)}")
    if not image.is_floating_point():
        raise TypeError(f"transforms expect a float tensor, got {image.dtype}")


def _uniform(generator: torch.Generator | None, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def _resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(image.shape[-2:]) == size:
        return image
    out = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=True)
    return out[0]


class Resize:
    """Resize with bilinear interpolation (antialiased when shrinking).

    ``size`` int: the shorter side becomes ``size`` (aspect ratio kept); (h, w): exact size.
    """

    def __init__(self, size: int | Sequence[int]) -> None:
        self.size = size

    def __call__(self, image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check(image)
        h, w = image.shape[-2:]
        if isinstance(self.size, int):
            if h <= w:
                target = (self.size, max(1, round(w * self.size / h)))
            else:
                target = (max(1, round(h * self.size / w)), self.size)
        else:
            target = _size2(self.size)
        return _resize(image, target)

    def __repr__(self) -> str:
        return f"Resize({self.size})"


class CenterCrop:
    """Crop the centre ``size``; an image smaller than ``size`` is zero-padded first."""

    def __init__(self, size: int | Sequence[int]) -> None:
        self.size = _size2(size)

    def __call__(self, image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check(image)
        th, tw = self.size
        h, w = image.shape[-2:]
        if h < th or w < tw:
            ph, pw = max(0, th - h), max(0, tw - w)
            image = F.pad(image, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
            h, w = image.shape[-2:]
        top = (h - th) // 2
        left = (w - tw) // 2
        return image[:, top : top + th, left : left + tw]

    def __repr__(self) -> str:
        return f"CenterCrop({self.size})"


class RandomResizedCrop:
    """Crop a random area fraction in ``scale`` with aspect ratio in ``ratio`` (log-uniform), resize to ``size``.

    Ten attempts to fit the box; otherwise a centre crop at the clamped aspect ratio (as in
    the Inception-style augmentation that torchvision popularised).
    """

    def __init__(
        self,
        size: int | Sequence[int],
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
    ) -> None:
        if not (0 < scale[0] <= scale[1] <= 1):
            raise ValueError(f"scale must satisfy 0 < low <= high <= 1, got {scale}")
        if not (0 < ratio[0] <= ratio[1]):
            raise ValueError(f"ratio must satisfy 0 < low <= high, got {ratio}")
        self.size = _size2(size)
        self.scale = scale
        self.ratio = ratio

    def box(self, height: int, width: int, generator: torch.Generator | None) -> tuple[int, int, int, int]:
        """(top, left, h, w) of the crop."""
        area = height * width
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        for _ in range(10):
            target_area = area * _uniform(generator, *self.scale)
            aspect = math.exp(_uniform(generator, log_lo, log_hi))
            w = round(math.sqrt(target_area * aspect))
            h = round(math.sqrt(target_area / aspect))
            if 0 < w <= width and 0 < h <= height:
                top = int(torch.randint(0, height - h + 1, (), generator=generator))
                left = int(torch.randint(0, width - w + 1, (), generator=generator))
                return top, left, h, w
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            w, h = width, round(width / self.ratio[0])
        elif in_ratio > self.ratio[1]:
            h, w = height, round(height * self.ratio[1])
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check(image)
        top, left, h, w = self.box(image.shape[-2], image.shape[-1], generator)
        return _resize(image[:, top : top + h, left : left + w], self.size)

    def __repr__(self) -> str:
        return f"RandomResizedCrop({self.size}, scale={self.scale}, ratio={self.ratio})"


class RandomHorizontalFlip:
    """Mirror left–right with probability ``p`` (changes anatomical laterality!)."""

    def __init__(self, p: float = 0.5) -> None:
        if not 0 <= p <= 1:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.p = p

    def __call__(self, image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check(image)
        if float(torch.rand((), generator=generator)) < self.p:
            return image.flip(-1)
        return image

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class RandomRotation:
    """Rotate by an angle uniform in [−degrees, degrees] about the centre (bilinear, zero fill)."""

    def __init__(self, degrees: float, fill: float = 0.0) -> None:
        if degrees < 0:
            raise ValueError(f"degrees must be >= 0, got {degrees}")
        self.degrees = degrees
        self.fill = fill

    def __call__(self, image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check(image)
        angle = _uniform(generator, -self.degrees, self.degrees)
        return rotate(image, angle, fill=self.fill)

    def __repr__(self) -> str:
        return f"RandomRotation({self.degrees})"


def affine_sampling_grid(
    a: float, b: float, c: float, d: float, height: int, width: int, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Sampling grid (1, H, W, 2) of the linear map [[a, b], [c, d]] in normalised coordinates.

    Equal to ``F.affine_grid([[a, b, 0], [c, d, 0]], (1, C, H, W), align_corners=False)``, but built
    from two broadcasted multiply-adds: on this CPU build ``affine_grid`` takes ~30 ms for a
    64×64 grid, which made rotation the data loader's bottleneck (see tests/data/test_transforms.py).
    """
    xs = (torch.arange(width, dtype=dtype) * 2 + 1) / width - 1  # pixel centres, align_corners=False
    ys = (torch.arange(height, dtype=dtype) * 2 + 1) / height - 1
    grid_x = a * xs[None, :] + b * ys[:, None]
    grid_y = c * xs[None, :] + d * ys[:, None]
    return torch.stack((grid_x, grid_y), dim=-1)[None]


def rotate(image: torch.Tensor, angle_degrees: float, fill: float = 0.0) -> torch.Tensor:
    """Rotate ``(C, H, W)`` counter-clockwise by ``angle_degrees`` about the centre, same size."""
    if angle_degrees == 0:
        return image
    h, w = image.shape[-2:]
    theta = math.radians(angle_degrees)
    cos, sin = math.cos(theta), math.sin(theta)
    # affine_grid works in normalised coords; correct for non-square aspect
    grid = affine_sampling_grid(cos, -sin * h / w, sin * w / h, cos, h, w, image.dtype)
    shifted = image[None] - fill
    out = F.grid_sample(shifted, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out[0] + fill


class ColorJitter:
    """Random brightness and contrast.

    Brightness multiplies by b ~ U[1 − brightness, 1 + brightness]; contrast blends with the
    image mean: ``mean + c (x − mean)``, c ~ U[1 − contrast, 1 + contrast]; the result is
    clamped to [0, 1] (inputs are in [0, 1] before normalisation). Order: brightness, contrast.
    """

    def __init__(self, brightness: float = 0.0, contrast: float = 0.0) -> None:
        for name, value in (("brightness", brightness), ("contrast", contrast)):
            if not 0 <= value < 1:
                raise ValueError(f"{name} must be in [0, 1), got {value}")
        self.brightness = brightness
        self.contrast = contrast

    def __call__(self, image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check(image)
        out = image
        if self.brightness > 0:
            out = out * _uniform(generator, 1 - self.brightness, 1 + self.brightness)
        if self.contrast > 0:
            factor = _uniform(generator, 1 - self.contrast, 1 + self.contrast)
            mean = out.mean()
            out = mean + factor * (out - mean)
        return out.clamp(0.0, 1.0) if out is not image else out

    def __repr__(self) -> str:
        return f"ColorJitter(brightness={self.brightness}, contrast={self.contrast})"


class Normalize:
    """``(x − mean) / std`` per channel; a length-1 mean/std applies to every channel."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        if len(mean) != len(std):
            raise ValueError(f"mean and std lengths differ: {len(mean)} vs {len(std)}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be > 0, got {list(std)}")
        self.mean = torch.tensor(list(mean), dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        _check(image)
        if self.mean.shape[0] not in (1, image.shape[0]):
            raise ValueError(f"Normalize has {self.mean.shape[0]} channels, image has {image.shape[0]}")
        return (image - self.mean.to(image.dtype)) / self.std.to(image.dtype)

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()})"


class Compose:
    """Apply transforms in order, passing the same generator to each."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, image: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        for t in self.transforms:
            image = t(image, generator)
        return image

    def __repr__(self) -> str:
        return "Compose([" + ", ".join(repr(t) for t in self.transforms) + "])"


def build_transforms(cfg: DataConfig, train: bool) -> Compose:
    """The train (``train=True``) or eval pipeline described by ``cfg``.

    Eval: resize (shorter side to ``eval_transforms.resize`` or ``image_size``) → centre crop
    ``image_size`` → normalise. Train: random-resized crop (or resize + centre crop when
    ``crop: center``) → rotation → flip → brightness/contrast → normalise.
    """
    size = cfg.image_size
    if not train:
        ev = cfg.eval_transforms
        return Compose([Resize(ev.resize or size), CenterCrop(size), Normalize(cfg.mean, cfg.std)])
    return _augmenting(cfg, cfg.train_transforms)


def build_view2_transforms(cfg: DataConfig) -> Compose:
    """The augmentation of SimCLR's second view: ``cfg.view2_transforms``, or the training
    augmentation ``cfg.train_transforms`` when that is null (two draws of one distribution)."""
    return _augmenting(cfg, cfg.view2_transforms or cfg.train_transforms)


def _augmenting(cfg: DataConfig, t: TrainTransformConfig) -> Compose:
    size = cfg.image_size
    steps: list[Transform] = []
    if t.crop == "random_resized":
        steps.append(RandomResizedCrop(size, scale=t.scale, ratio=t.ratio))
    else:
        steps.append(Resize(t.resize or size))
        steps.append(CenterCrop(size))
    if t.rotation_degrees > 0:
        steps.append(RandomRotation(t.rotation_degrees))
    if t.hflip_p > 0:
        steps.append(RandomHorizontalFlip(t.hflip_p))
    if t.brightness > 0 or t.contrast > 0:
        steps.append(ColorJitter(t.brightness, t.contrast))
    steps.append(Normalize(cfg.mean, cfg.std))
    return Compose(steps)
