"""Torch-op transforms: shapes, exact values where defined, seeding through the generator."""

from __future__ import annotations

import pytest
import torch

from medvl.config.data import DataConfig, TrainTransformConfig
from medvl.data.transforms import (
    CenterCrop,
    ColorJitter,
    Compose,
    Normalize,
    RandomHorizontalFlip,
    RandomResizedCrop,
    RandomRotation,
    Resize,
    build_transforms,
)
from medvl.data.transforms import rotate as rotate_image


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_resize_shorter_side_and_exact() -> None:
    x = torch.rand(1, 20, 40)
    assert Resize(10)(x).shape == (1, 10, 20)
    assert Resize(10)(torch.rand(3, 40, 20)).shape == (3, 20, 10)
    assert Resize((7, 9))(x).shape == (1, 7, 9)
    const = torch.full((1, 16, 16), 0.3)
    torch.testing.assert_close(Resize(8)(const), torch.full((1, 8, 8), 0.3))


def test_center_crop_values_and_padding() -> None:
    x = torch.arange(25.0).view(1, 5, 5)
    torch.testing.assert_close(CenterCrop(3)(x), x[:, 1:4, 1:4])
    padded = CenterCrop(7)(x)
    assert padded.shape == (1, 7, 7)
    torch.testing.assert_close(padded[:, 1:6, 1:6], x)
    assert float(padded[0, 0, 0]) == 0.0


def test_random_resized_crop_seeded_and_in_bounds() -> None:
    x = torch.rand(1, 50, 60)
    t = RandomResizedCrop(16, scale=(0.2, 0.9))
    a, b = t(x, gen(3)), t(x, gen(3))
    assert a.shape == (1, 16, 16)
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, t(x, gen(4)))
    for seed in range(50):
        top, left, h, w = t.box(50, 60, gen(seed))
        assert top >= 0 and top + h <= 50 and left >= 0 and left + w <= 60
        assert 0.2 * 3000 * 0.8 <= h * w <= 0.9 * 3000 * 1.2  # area in the requested range (rounding slack)
    with pytest.raises(ValueError):
        RandomResizedCrop(8, scale=(0.5, 1.5))


def test_flip() -> None:
    x = torch.arange(6.0).view(1, 2, 3)
    torch.testing.assert_close(RandomHorizontalFlip(1.0)(x, gen(0)), x.flip(-1))
    torch.testing.assert_close(RandomHorizontalFlip(0.0)(x, gen(0)), x)
    flips = sum(not torch.equal(RandomHorizontalFlip(0.5)(x, gen(s)), x) for s in range(200))
    assert 70 < flips < 130


def test_rotation_matches_rot90_and_zero_is_identity() -> None:
    x = torch.rand(2, 9, 9)
    torch.testing.assert_close(rotate_image(x, 90.0), torch.rot90(x, 1, dims=(-2, -1)), atol=1e-5, rtol=0)
    torch.testing.assert_close(rotate_image(x, 0.0), x)
    small = RandomRotation(5)(x, gen(0))
    assert small.shape == x.shape
    torch.testing.assert_close(small, RandomRotation(5)(x, gen(0)))


def test_color_jitter_ranges() -> None:
    x = torch.full((1, 4, 4), 0.5)
    x[0, 0, 0] = 0.1
    for seed in range(20):
        y = ColorJitter(brightness=0.2, contrast=0.2)(x, gen(seed))
        assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
        ratio = float(y[0, 1, 1]) / 0.5
        assert 0.5 < ratio < 1.5
    assert torch.equal(ColorJitter()(x, gen(0)), x)
    # brightness alone scales every pixel by the same factor
    y = ColorJitter(brightness=0.3)(x, gen(1))
    factor = y / x
    torch.testing.assert_close(factor, torch.full_like(factor, float(factor[0, 1, 1])))


def test_normalize() -> None:
    x = torch.ones(3, 2, 2)
    y = Normalize((0.5, 0.25, 0.0), (0.5, 0.25, 2.0))(x)
    torch.testing.assert_close(y[:, 0, 0], torch.tensor([1.0, 3.0, 0.5]))
    torch.testing.assert_close(Normalize((0.5,), (0.5,))(x), torch.ones(3, 2, 2))
    with pytest.raises(ValueError):
        Normalize((0.5, 0.5), (0.5, 0.5))(x)
    with pytest.raises(ValueError):
        Normalize((0.5,), (0.0,))


def test_build_transforms_train_vs_eval() -> None:
    cfg = DataConfig(manifest="m.parquet", image_size=32, train_transforms=TrainTransformConfig(hflip_p=0.5))
    train, ev = build_transforms(cfg, train=True), build_transforms(cfg, train=False)
    assert isinstance(train.transforms[0], RandomResizedCrop)
    assert any(isinstance(t, RandomHorizontalFlip) for t in train.transforms)
    assert [type(t) for t in ev.transforms] == [Resize, CenterCrop, Normalize]
    x = torch.rand(3, 48, 64)
    out_eval = ev(x, gen(0))
    assert out_eval.shape == (3, 32, 32)
    torch.testing.assert_close(out_eval, ev(x, gen(99)))  # eval ignores randomness
    a, b = train(x, gen(5)), train(x, gen(5))
    torch.testing.assert_close(a, b)
    assert not torch.equal(a, train(x, gen(6)))


def test_compose_reports_pipeline() -> None:
    assert "Resize" in repr(Compose([Resize(4)]))


@pytest.mark.parametrize(("height", "width", "degrees"), [(64, 64, 5.0), (31, 48, -12.0), (8, 5, 30.0)])
def test_affine_sampling_grid_equals_torch_affine_grid(height: int, width: int, degrees: float) -> None:
    import math

    import torch.nn.functional as F

    from medvl.data.transforms import affine_sampling_grid

    t = math.radians(degrees)
    a, b, c, d = math.cos(t), -math.sin(t) * height / width, math.sin(t) * width / height, math.cos(t)
    expected = F.affine_grid(torch.tensor([[[a, b, 0.0], [c, d, 0.0]]]), [1, 1, height, width], align_corners=False)
    assert torch.allclose(affine_sampling_grid(a, b, c, d, height, width), expected, atol=1e-6)
