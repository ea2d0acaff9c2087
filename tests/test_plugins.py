"""An experiment defined outside efflab, registered through the ``efflab.experiments`` entry
point group, appears in ``efflab list`` and runs with ``efflab run``.

The test lays out an installed distribution the way pip does (the package and its
``*.dist-info`` folder with ``entry_points.txt``) in a temporary site folder on the path.
"""

import json
import os
import subprocess
import sys
import textwrap

PLUGIN = textwrap.dedent('''
    from dataclasses import dataclass

    from efflab.experiments import register
    from efflab.experiments.base import Claim, Experiment, ExperimentConfig
    from efflab.experiments.checks import param, positive
    from efflab.experiments.verdicts import at_least


    @dataclass
    class CoinConfig(ExperimentConfig):
        flips: int = param(200, "coin flips", check=positive)


    @register
    class Coin(Experiment):
        name = "outside-coin"
        paper = "A plugin (not part of efflab)"
        checks = "a fair coin lands heads about half the time"
        Config = CoinConfig
        budget_s = {"quick": 10.0, "full": 10.0}

        def run(self, config, ctx):
            import torch
            g = torch.Generator().manual_seed(config.seed)
            return {"heads": float(torch.rand(config.flips, generator=g).lt(0.5).float().mean())}

        def claims(self, results, config):
            h = results["heads"]
            return [Claim("heads near one half", paper="0.5", ours=f"{h:.3f}",
                          tolerance=">= 0.3", verdict=at_least(h, 0.3))]
''')


def _install(site):
    pkg = site / "coinplugin"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "experiment.py").write_text(PLUGIN)
    info = site / "coinplugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: coinplugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[efflab.experiments]\ncoin = coinplugin.experiment\n")


def test_out_of_tree_experiment_is_listed_and_runs(tmp_path):
    site = tmp_path / "site"
    _install(site)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *sys.path]),
           "OMP_NUM_THREADS": "1"}
    listed = subprocess.run([sys.executable, "-m", "efflab", "list"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    assert "outside-coin" in listed.stdout
    out = tmp_path / "runs"
    ran = subprocess.run([sys.executable, "-m", "efflab", "run", "outside-coin", "--out",
                          str(out), "--quiet"], env=env, capture_output=True, text=True,
                         timeout=120)
    assert ran.returncode == 0, ran.stderr
    record = json.loads((out / "outside-coin" / "results.json").read_text())
    assert record["verdict"] == "reproduced"
    assert 0.3 < record["results"]["heads"] < 0.7


def test_a_broken_plugin_is_reported_not_hidden(tmp_path):
    site = tmp_path / "site"
    _install(site)
    (site / "coinplugin" / "experiment.py").write_text("raise RuntimeError('plugin bug')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *sys.path])}
    code = ("from efflab import experiments as e; b = e.broken(); "
            "print([k for k in b if 'coinplugin' in k], 'plugin bug' in str(b))")
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "['coinplugin.experiment'] True"
