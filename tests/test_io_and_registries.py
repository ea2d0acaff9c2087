"""Atomic writes, config parsing, verdicts, and the model registry."""

import json
import os
from dataclasses import dataclass
from typing import Literal

import pytest
import torch

from efflab.experiments.base import (
    Claim,
    ConfigError,
    ExperimentConfig,
    Table,
    combine_verdicts,
)
from efflab.experiments.verdicts import within
from efflab.io import atomic_write_json, atomic_write_text
from efflab.models import create_model


def test_atomic_write_keeps_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "results.json"
    atomic_write_json(path, {"a": 1})
    with pytest.raises(ValueError):
        atomic_write_json(path, {"bad": object.__new__(_Unserializable)})
    assert json.loads(path.read_text()) == {"a": 1}
    assert os.listdir(tmp_path) == ["results.json"]


class _Unserializable:
    def tolist(self):
        raise ValueError("cannot serialize")


def test_atomic_json_converts_tensors_and_nonfinite(tmp_path):
    path = atomic_write_json(tmp_path / "x.json",
                             {"t": torch.tensor([1.0, float("inf")]), "n": float("nan")})
    assert json.loads(path.read_text()) == {"t": [1.0, None], "n": None}


def test_atomic_text_has_normal_permissions(tmp_path):
    path = atomic_write_text(tmp_path / "r.md", "hi")
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask


@dataclass
class _Cfg(ExperimentConfig):
    n: int = 3
    lr: float = 0.1
    flag: bool = False
    kind: Literal["a", "b"] = "a"
    widths: tuple[int, ...] = (1, 2)
    cap: float | None = None
    name: str = "x"


def test_overrides_parse_each_type():
    c = _Cfg().with_overrides(["n=5", "lr=1e-3", "flag=true", "kind=b", "widths=4,8,16",
                               "cap=none", "name=hello", "seed=9"])
    assert (c.n, c.lr, c.flag, c.kind, c.widths, c.cap, c.name, c.seed) == (
        5, 1e-3, True, "b", (4, 8, 16), None, "hello", 9)
    assert _Cfg().with_overrides(["cap=2.5"]).cap == 2.5


@pytest.mark.parametrize("item,msg", [
    ("n=1.5", "n: expected int, got '1.5'"), ("flag=maybe", "flag: expected bool"),
    ("kind=c", "kind: expected one of ['a', 'b'], got 'c'"),
    ("widths=1,x", "widths: expected int, got 'x'"), ("cap=big", "cap: expected"),
    ("zzz=1", "valid keys: seed, n, lr, flag, kind, widths, cap, name"),
])
def test_override_errors_name_key_and_expected_type(item, msg):
    with pytest.raises(ConfigError) as e:
        _Cfg().with_overrides([item])
    assert msg in str(e.value)


def test_profile_name_checked():
    with pytest.raises(ConfigError, match="profile must be one of"):
        _Cfg.profile("medium")


def test_verdicts_combine_and_validate():
    r, p, n = "reproduced", "partly", "not reproduced"
    mk = lambda v: Claim("t", "1", "1", "exact", v)  # noqa: E731
    assert combine_verdicts([mk(r), mk(r)]) == r
    assert combine_verdicts([mk(r), mk(n)]) == p
    assert combine_verdicts([mk(n)]) == n
    assert combine_verdicts([]) == n
    with pytest.raises(ValueError, match="verdict must be one of"):
        mk("sort of")
    assert within(1.04, 1.0, rel_tol=0.05) == r
    assert within(1.08, 1.0, rel_tol=0.05, partly_rel_tol=0.1) == p
    assert within(1.2, 1.0, rel_tol=0.05, partly_rel_tol=0.1) == n


def test_table_rows_must_match_columns():
    with pytest.raises(ValueError, match="row 0 has 1 cells, expected 2"):
        Table("t", ["a", "b"], [[1]])


@pytest.mark.parametrize("name,kwargs,shape", [
    ("mlp", {}, (3, 40)), ("cnn", {}, (3, 40)),
    ("resnet", {"blocks": (1, 1), "widths": (8, 16), "in_channels": 1, "dim": 1}, (3, 40)),
    ("resnet", {"blocks": (1,), "widths": (8,), "batch_norm": False}, (3, 3, 16, 16)),
])
def test_models_build_by_name(name, kwargs, shape):
    model = create_model(name, **kwargs)
    assert model(torch.randn(*shape)).shape == (3, 10)


def test_resnet18_has_the_cifar_parameter_count():
    n = sum(p.numel() for p in create_model("resnet18").parameters())
    assert n == 11_173_962  # He et al.'s CIFAR ResNet-18 with a 10-way head


def test_unknown_model_suggests_names():
    with pytest.raises(ValueError, match="did you mean resnet18"):
        create_model("resnet81")


def test_mnist1d_is_generated_locally_and_deterministic(monkeypatch):
    import socket

    from efflab.data import mnist1d as m

    m._generate.cache_clear()

    def no_network(*a, **k):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    a = m.load_mnist1d(num_samples=200, seed=5)
    m._generate.cache_clear()
    b = m.load_mnist1d(num_samples=200, seed=5)
    assert a.x_train.shape == (160, 40) and a.y_test.shape == (40,)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_train, b.y_train)
    assert set(a.y_train.tolist()) <= set(range(10))
    with pytest.raises(ValueError, match="train_split must be in"):
        m.load_mnist1d(train_split=1.5)


def test_git_commit_of_a_copy_outside_git_says_so(tmp_path, monkeypatch):
    """An installed package (a wheel) is not a git checkout, even inside some repository."""
    import shutil
    import subprocess

    import efflab
    from efflab.experiments import runner

    repo = tmp_path / "repo"
    site = repo / ".venv" / "site-packages" / "efflab"
    site.mkdir(parents=True)
    shutil.copy(efflab.__file__, site / "__init__.py")
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    monkeypatch.setattr(efflab, "__file__", str(site / "__init__.py"))
    assert runner._git_commit() == f"not a git checkout (efflab {efflab.__version__})"
