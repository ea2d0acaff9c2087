import pytest
import torch

from efflab.data.digits import load_digits


def test_shapes_split_and_determinism():
    s = load_digits(size=16, seed=0)
    assert s.x_train.shape[1:] == (1, 16, 16) and s.x_test.shape[1:] == (1, 16, 16)
    assert s.x_train.shape[0] + s.x_test.shape[0] == 1797
    assert abs(s.x_test.shape[0] - 0.25 * 1797) < 10
    # every class is in both parts (stratified), and the same seed gives the same tensors
    assert set(s.y_train.tolist()) == set(range(10)) == set(s.y_test.tolist())
    t = load_digits(size=16, seed=0)
    assert torch.equal(s.x_train, t.x_train) and torch.equal(s.y_test, t.y_test)
    u = load_digits(size=16, seed=1)
    assert not torch.equal(s.y_test, u.y_test)


def test_standardized_with_training_statistics_and_pad_keeps_pixels():
    s = load_digits(size=8)
    assert abs(float(s.x_train.mean())) < 1e-5 and abs(float(s.x_train.std()) - 1) < 1e-4
    p = load_digits(size=12, resize="pad", channels=3)
    assert p.x_train.shape[1:] == (3, 12, 12)
    assert torch.equal(p.x_train[:, 0, 2:10, 2:10], s.x_train[:, 0])
    assert torch.equal(p.x_train[:, 0], p.x_train[:, 2])


@pytest.mark.parametrize("kw", [dict(size=4), dict(size=16.0), dict(test_fraction=1.0),
                                dict(resize="nearest"), dict(channels=0)])
def test_bad_arguments_name_themselves(kw):
    with pytest.raises(ValueError, match=next(iter(kw))):
        load_digits(**kw)
