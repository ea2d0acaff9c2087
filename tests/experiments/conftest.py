"""Fixtures of the launcher tests: one local Ray for the whole session (its start-up is
slow), and PYTHONPATH for the processes the launchers start."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))  # sweep_points, tiny_experiments
WORKER_PATH = os.pathsep.join([str(HERE.parents[1] / "src"), str(HERE)])


@pytest.fixture
def worker_path(monkeypatch):
    """Processes started from here (Submitit's jobs) import efflab and the test modules."""
    monkeypatch.setenv("PYTHONPATH", WORKER_PATH)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the session: 2 CPUs, loopback only; its workers import efflab and
    the test modules."""
    import ray

    env = {k: os.environ.get(k) for k in ("PYTHONPATH", "OMP_NUM_THREADS", "RAY_ADDRESS")}
    os.environ["PYTHONPATH"] = WORKER_PATH
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ.pop("RAY_ADDRESS", None)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             _node_ip_address="127.0.0.1", configure_logging=False)
    try:
        yield ray
    finally:
        ray.shutdown()
        for k, v in env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
