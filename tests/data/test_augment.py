"""On-device augmentation: the batched crop against its per-sample reference, flips, copies."""

from __future__ import annotations

import pytest
import torch

from efflab.data.augment import (
    crop_flip,
    fixed_copies,
    random_crop,
    random_crop_reference,
    random_flip,
)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("shape, spatial", [((6, 3, 7, 5), 2), ((4, 1, 8, 8), 2),
                                            ((5, 11), 1), ((5, 2, 9), 1)])
@pytest.mark.parametrize("mode", ["reflect", "constant"])
@pytest.mark.parametrize("pad", [1, 3])
def test_crop_matches_reference(shape, spatial, mode, pad):
    x = torch.randn(*shape, generator=gen(pad), dtype=torch.float64)
    fast = random_crop(x, pad, gen(7), spatial=spatial, mode=mode)
    slow = random_crop_reference(x, pad, gen(7), spatial=spatial, mode=mode)
    assert fast.shape == x.shape
    torch.testing.assert_close(fast, slow, rtol=0, atol=0)


def test_crop_is_a_shifted_window():
    """With zero padding, each 1-D output is the input shifted by one of -pad..pad."""
    x = torch.arange(1, 11, dtype=torch.float32).repeat(200, 1)  # (200, 10)
    out = random_crop(x, 2, gen(), spatial=1, mode="constant")
    windows = {}
    for shift in range(-2, 3):
        w = torch.zeros(10)
        for j in range(10):
            if 0 <= j + shift < 10:
                w[j] = j + shift + 1
        windows[shift] = w
    shifts = set()
    for row in out:
        matches = [s for s, w in windows.items() if torch.equal(row, w)]
        assert len(matches) == 1, row
        shifts.add(matches[0])
    assert shifts == {-2, -1, 0, 1, 2}


def test_integer_images_keep_dtype():
    x = torch.randint(0, 256, (4, 3, 6, 6), generator=gen(), dtype=torch.uint8)
    out = random_crop(x, 2, gen(1))
    assert out.dtype == torch.uint8
    assert torch.equal(out, random_crop_reference(x, 2, gen(1)))


def test_flip():
    x = torch.randn(400, 3, 4, 5, generator=gen())
    out = random_flip(x, gen(1))
    flipped = torch.tensor([torch.equal(o, xi.flip(-1)) for o, xi in zip(out, x)])
    kept = torch.tensor([torch.equal(o, xi) for o, xi in zip(out, x)])
    assert bool((flipped ^ kept).all())
    assert 0.4 < flipped.float().mean().item() < 0.6
    assert torch.equal(random_flip(x, gen(), p=0.0), x)
    assert torch.equal(random_flip(x, gen(), p=1.0), x.flip(-1))


def test_same_generator_same_draw():
    x = torch.randn(8, 3, 8, 8, generator=gen())
    aug = crop_flip(pad=2)
    assert torch.equal(aug(x, gen(3)), aug(x, gen(3)))
    assert not torch.equal(aug(x, gen(3)), aug(x, gen(4)))


def test_fixed_copies():
    x = torch.randn(10, 12, generator=gen())
    y = torch.arange(10)
    aug = crop_flip(pad=3, spatial=1)
    xc, yc = fixed_copies(x, y, aug, copies=3, generator=gen(5), include_original=True)
    assert xc.shape == (40, 12) and torch.equal(yc, y.repeat(4))
    assert torch.equal(xc[:10], x)
    assert not torch.equal(xc[10:20], xc[20:30])
    xc2, _ = fixed_copies(x, y, aug, copies=3, generator=gen(5), include_original=True)
    assert torch.equal(xc, xc2)


def test_errors():
    x = torch.randn(4, 3, 8, 8)
    with pytest.raises(ValueError, match="pad must be >= 0, got -1"):
        random_crop(x, -1, gen())
    with pytest.raises(ValueError, match=r"1 spatial axes, got shape \(4,\)"):
        random_crop(torch.randn(4), 2, gen(), spatial=1)
    with pytest.raises(ValueError, match="p must be in"):
        random_flip(x, gen(), p=1.5)
    with pytest.raises(ValueError, match="copies must be >= 1"):
        fixed_copies(x, torch.zeros(4), crop_flip(), copies=0, generator=gen())
