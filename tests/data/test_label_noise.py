"""Label noise: the requested fraction flips, always to another class, uniformly, and the fast
path agrees with the sample-by-sample reference."""

import pytest
import torch

from efflab.data.label_noise import flip_labels, flip_labels_reference


def _labels(n: int, c: int, seed: int) -> torch.Tensor:
    return torch.randint(0, c, (n,), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("p", [0.0, 0.15, 0.5, 1.0])
def test_flips_requested_fraction(p):
    n, c = 20000, 10
    y = _labels(n, c, 0)
    noisy = flip_labels(y, p, c, torch.Generator().manual_seed(1))
    # a binomial count: 5 standard deviations is a test that fails for a wrong p, not by chance
    sd = (n * p * (1 - p)) ** 0.5
    assert abs(int(noisy.flipped.sum()) - n * p) <= 5 * sd + 1e-9
    assert torch.equal(noisy.flipped, noisy.labels != y)  # flipped <=> changed
    assert noisy.fraction == pytest.approx(float(noisy.flipped.float().mean()))
    assert torch.equal(y, _labels(n, c, 0))  # input untouched


def test_new_class_is_uniform_over_the_others():
    n, c = 30000, 4
    y = torch.zeros(n, dtype=torch.int64)
    noisy = flip_labels(y, 1.0, c, torch.Generator().manual_seed(2))
    counts = torch.bincount(noisy.labels, minlength=c).double()
    assert counts[0] == 0
    expected = n / (c - 1)
    chi2 = float(((counts[1:] - expected) ** 2 / expected).sum())
    assert chi2 < 20.0  # 2 degrees of freedom: P(chi2 > 20) ~ 5e-5


def test_matches_reference_and_is_deterministic():
    y = _labels(500, 10, 3)
    a = flip_labels(y, 0.3, 10, torch.Generator().manual_seed(4))
    b = flip_labels_reference(y, 0.3, 10, torch.Generator().manual_seed(4))
    assert torch.equal(a.labels, b.labels) and torch.equal(a.flipped, b.flipped)
    c = flip_labels(y, 0.3, 10, torch.Generator().manual_seed(5))
    assert not torch.equal(a.flipped, c.flipped)


def test_errors_name_the_argument():
    y = _labels(10, 3, 0)
    g = torch.Generator()
    with pytest.raises(ValueError, match="p must be in"):
        flip_labels(y, 1.5, 3, g)
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        flip_labels(torch.zeros(3, dtype=torch.int64), 0.1, 1, g)
    with pytest.raises(ValueError, match=r"labels in y must lie in \[0, 2\)"):
        flip_labels(y, 0.1, 2, g)
    with pytest.raises(ValueError, match="1-D int64"):
        flip_labels(y.float(), 0.1, 3, g)


def test_resample_labels_matches_reference_and_changes_p_times_9_10():
    from efflab.data.label_noise import resample_labels, resample_labels_reference

    y = _labels(400, 10, 6)
    a = resample_labels(y, 0.3, 10, torch.Generator().manual_seed(7))
    b = resample_labels_reference(y, 0.3, 10, torch.Generator().manual_seed(7))
    assert torch.equal(a.labels, b.labels) and torch.equal(a.flipped, b.flipped)
    assert torch.equal(a.flipped, a.labels != y) and torch.equal(y, _labels(400, 10, 6))
    # the notebook's noise: a uniform draw over all classes, so p (1 - 1/C) of labels change
    n, p, c = 40000, 0.15, 10
    big = _labels(n, c, 8)
    noisy = resample_labels(big, p, c, torch.Generator().manual_seed(9))
    q = p * (1 - 1 / c)
    assert abs(int(noisy.flipped.sum()) - n * q) <= 5 * (n * q * (1 - q)) ** 0.5
    # a redrawn label is uniform over all classes: the kept original shows up as often as others
    zeros = torch.zeros(30000, dtype=torch.int64)
    counts = torch.bincount(resample_labels(zeros, 1.0, 4, torch.Generator().manual_seed(1))
                            .labels, minlength=4).double()
    chi2 = float(((counts - 7500) ** 2 / 7500).sum())
    assert chi2 < 22.0  # 3 degrees of freedom: P(chi2 > 22) ~ 6e-5
    with pytest.raises(ValueError, match="p must be in"):
        resample_labels(y, 1.5, 10, torch.Generator())
