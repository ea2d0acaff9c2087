"""Every registered experiment runs end to end: results, claims, figures, tables, report.

Each experiment declares its own seconds-long overrides (``Experiment.smoke``, see
docs/reproduce.md "Writing claims"); one that declares none runs its quick profile here,
marked slow, as does one that says its smoke run is slow (``smoke_slow``).
"""

import pytest
import torch

from efflab import experiments as registry
from efflab.experiments.base import CLAIM_KINDS, VERDICTS
from efflab.experiments.record import load_record
from efflab.experiments.runner import PlannedRun, run_planned
from efflab.io import to_jsonable
from efflab.report import build_report


def _case(name):
    exp = registry.get(name)
    slow = not exp.smoke or exp.smoke_slow
    return pytest.param(name, id=name, marks=[pytest.mark.slow] if slow else [])


def test_the_registry_has_every_experiment_and_no_broken_module():
    assert registry.broken() == {}
    assert len(registry.names()) >= 12


@pytest.mark.parametrize("name", [_case(n) for n in registry.names()])
def test_experiment_runs_end_to_end(name, tmp_path):
    exp = registry.get(name)
    config = exp.smoke_config() if exp.smoke else exp.Config.quick()
    torch.set_num_threads(1)
    rec = run_planned(PlannedRun(exp, config, "quick"), tmp_path, torch.device("cpu"))
    assert rec.status == "ok", rec.error
    folder = tmp_path / name
    record = load_record(folder / "results.json")
    assert record.config == to_jsonable(config.to_dict())
    assert record.results is not None
    assert record.claims_of("reproduction"), "an experiment must check at least one claim"
    for c in record.claims:
        assert c.kind in CLAIM_KINDS and c.verdict in VERDICTS
        assert c.text and c.paper and c.ours and c.tolerance
    assert record.verdict in ("reproduced", "partly", "inconclusive", "not reproduced"), (
        f"a property failed: {[c.text for c in record.claims_of('property')]}")
    for fig in record.figures:
        assert (folder / fig).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", fig
    assert len(record.table_files) == len(record.tables)
    assert all((folder / f).is_file() for f in record.table_files)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    warnings = []
    build_report(tmp_path, warn=warnings.append)
    assert warnings == [] and (folder / "report.md").is_file()
