"""The result record and the report: typed, checked on reading, robust to foreign files."""

import json
from html.parser import HTMLParser

import pytest

from efflab.cli import main
from efflab.experiments.base import Claim, Table
from efflab.experiments.record import RecordError, ResultRecord, load_record
from efflab.report import build_report, experiment_markdown, load_results


def _record(name="exp-a", claims=None, **kw) -> ResultRecord:
    claims = claims if claims is not None else [
        Claim("effect holds", "yes", "0.62", "> 0.5", "reproduced"),
        Claim("effect is large", "0.9", "0.6 [0.4, 0.8]", ">= 0.7", "inconclusive",
              interval={"value": 0.6, "lo": 0.4, "hi": 0.8, "n": 3, "method": "t",
                        "level": 0.95}, settle="ten seeds"),
        Claim("rank 0 at step 0", "0", "0", "exact", "reproduced", kind="property"),
        Claim("latency", "-", "3 ms", "-", "reproduced", kind="measurement"),
    ]
    from efflab.experiments.record import experiment_verdict

    base = dict(experiment=name, paper="Some paper, §2", checks="an effect", profile="quick",
                status="ok", seed=0, config={"seed": 0, "n": 3}, results={"x": [1, 2]},
                claims=claims, verdict=experiment_verdict("ok", claims),
                tables=[Table("wide table", [f"c{i}" for i in range(14)], [list(range(14))])],
                figures=[], error=None, environment={"device_name": "test cpu"},
                budget_s=10.0, wall_time_s=2.5, started="t0", finished="t1",
                table_files=[])
    base.update(kw)
    return ResultRecord(**base)


def _write(folder, name, data):
    (folder / name).mkdir(parents=True, exist_ok=True)
    path = folder / name / "results.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_record_round_trips_through_json(tmp_path):
    rec = _record()
    rec.save(tmp_path)
    back = load_record(tmp_path / "results.json")
    assert back == rec
    assert back.reproductions_passed == (1, 2)
    assert [c.text for c in back.claims_of("property")] == ["rank 0 at step 0"]
    assert back.verdict == "inconclusive" and not back.over_budget
    assert _record(wall_time_s=11.0).over_budget and not _record(budget_s=None).over_budget


def test_verdict_is_recomputed_from_the_claims(tmp_path):
    data = _record().to_dict()
    data["verdict"] = "reproduced"                  # edited by hand: the claims decide
    assert load_record(_write(tmp_path, "a", data)).verdict == "inconclusive"
    data["status"] = "failed"
    assert load_record(_write(tmp_path, "b", data)).verdict == "failed"


def _good():
    return _record().to_dict()


def _edit(fn):
    data = _good()
    fn(data)
    return data


FOREIGN = {
    "a list": ([1, 2], "must hold a JSON object, got a list"),
    "null": ("null", "must hold a JSON object, got null"),
    "a number": ("3", "must hold a JSON object, got a number"),
    "not JSON": ("{oops", "is not valid JSON"),
    "empty": ("", "is not valid JSON"),
    "no experiment": (_edit(lambda d: d.pop("experiment")), "'experiment' is missing"),
    "no status": (_edit(lambda d: d.pop("status")), "'status' is missing"),
    "bad status": (_edit(lambda d: d.update(status="done")), "'status' must be one of"),
    "claim without text": (_edit(lambda d: d["claims"][0].pop("text")), "claims[0] has no 'text'"),
    "claim text a number": (_edit(lambda d: d["claims"][1].update(text=5)),
                            "claims[1].text must be a string, got a number 5"),
    "claim bad verdict": (_edit(lambda d: d["claims"][0].update(verdict="yes")),
                          "claims[0]: verdict must be one of"),
    "claim bad kind": (_edit(lambda d: d["claims"][0].update(kind="vibe")),
                       "claims[0]: kind must be one of"),
    "claim not an object": (_edit(lambda d: d["claims"].append("x")),
                            "claims[4] must be an object, got a string"),
    "claims an object": (_edit(lambda d: d.update(claims={})), "'claims' must be a list"),
    "bad interval": (_edit(lambda d: d["claims"][0].update(interval=[1, 2])),
                     "claims[0].interval must be an object"),
    "environment a list": (_edit(lambda d: d.update(environment=[1])),
                           "'environment' must be an object, got a list"),
    "number as verdict": (_edit(lambda d: d.update(verdict=3)), "'verdict' must be one of"),
    "config a string": (_edit(lambda d: d.update(config="n=3")), "'config' must be an object"),
    "figure outside": (_edit(lambda d: d.update(figures=["../../etc/passwd"])),
                       "'figures' must be a list of file names inside the folder"),
    "figure absolute": (_edit(lambda d: d.update(figures=["/tmp/x.png"])), "'figures' must be"),
    "negative time": (_edit(lambda d: d.update(wall_time_s=-1)), "'wall_time_s' must be"),
    "time a string": (_edit(lambda d: d.update(wall_time_s="fast")), "'wall_time_s' must be"),
    "ragged table": (_edit(lambda d: d["tables"][0]["rows"].append([1])),
                     "tables[0]: table 'wide table': row 1 has 1 cells"),
    "table rows a dict": (_edit(lambda d: d["tables"][0].update(rows={})),
                          "tables[0] needs 'columns'"),
    "future format": (_edit(lambda d: d.update(format=99)), "format 99 is not one"),
    "seed a string": (_edit(lambda d: d.update(seed="0")), "'seed' must be an integer"),
}


@pytest.mark.parametrize("case", sorted(FOREIGN))
def test_foreign_results_are_refused_with_the_reason(tmp_path, case):
    data, reason = FOREIGN[case]
    path = _write(tmp_path, "x", data)
    with pytest.raises(RecordError) as e:
        load_record(path)
    assert reason in e.value.reason and str(path) in str(e.value)


def test_report_lists_every_unreadable_result_and_builds_the_rest(tmp_path, capsys):
    _record("exp-good").save(tmp_path / "exp-good")
    for i, case in enumerate(sorted(FOREIGN)):
        _write(tmp_path, f"bad-{i:02d}", FOREIGN[case][0])
    (tmp_path / "folder-results" / "results.json").mkdir(parents=True)
    (tmp_path / "unreadable").mkdir()
    (tmp_path / "unreadable" / "results.json").write_bytes(b"\xff\xfe\x00garbage")
    (tmp_path / ".hidden.partial").mkdir()
    (tmp_path / ".hidden.partial" / "results.json").write_text("[]")
    assert main(["report", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    html = (tmp_path / "index.html").read_text()
    assert "exp-good" in html and "Unreadable results (28)" in html
    assert err.count("efflab: warning:") == 28 and "Traceback" not in err
    assert "folder-results/results.json: is a folder" in err
    assert "unreadable/results.json: cannot be read" in err
    assert ".hidden" not in err


def test_report_of_only_unreadable_results_still_lists_them(tmp_path, capsys):
    _write(tmp_path, "x", "[]")
    assert main(["report", str(tmp_path)]) == 0
    assert "Unreadable results (1)" in (tmp_path / "index.html").read_text()


def test_report_refuses_an_index_that_is_a_folder(tmp_path, capsys):
    _record().save(tmp_path / "exp-a")
    (tmp_path / "index.html").mkdir()
    assert main(["report", str(tmp_path)]) == 2
    assert "index.html is a folder" in capsys.readouterr().err


def test_missing_figure_is_a_warning_not_a_broken_image(tmp_path, capsys):
    folder = tmp_path / "exp-a"
    folder.mkdir()
    (folder / "there.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    _record(figures=["there.png", "gone.png"]).save(folder)
    assert main(["report", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "gone.png: figure named in exp-a/results.json is missing" in err
    page = _Page()
    page.feed((tmp_path / "index.html").read_text())
    assert page.imgs == ["exp-a/there.png"]


class _Page(HTMLParser):
    """Image sources, and the text of each section (h2/h3 -> the text below it)."""

    def __init__(self):
        super().__init__()
        self.imgs, self.headings, self.text = [], [], []
        self._in_heading = False

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.imgs.append(dict(attrs)["src"])
        self._in_heading = tag in ("h2", "h3")

    def handle_endtag(self, tag):
        if tag in ("h2", "h3"):
            self._in_heading = False

    def handle_data(self, data):
        if self._in_heading and data.strip():
            self.headings.append(data.strip())
        self.text.append(data)


def test_report_overview_kinds_intervals_and_scrolling(tmp_path):
    _record("exp-a").save(tmp_path / "exp-a")
    broken = [Claim("holds", "1", "1", "=", "reproduced"),
              Claim("identity", "0", "1e-3", "1e-8", "not reproduced", kind="property")]
    _record("exp-b", claims=broken, wall_time_s=30.0).save(tmp_path / "exp-b")
    build_report(tmp_path)
    html = (tmp_path / "index.html").read_text()
    page = _Page()
    page.feed(html)
    assert page.headings[0] == "Overview"
    assert [h for h in page.headings if h.startswith(("Reproductions", "Properties",
                                                      "Measurements"))][:3] == [
        "Reproductions (the paper's claims; they decide the verdict)",
        "Properties (checks of our own code or of an identity; a failure is a bug)",
        "Measurements (time and memory on this machine; shown, never deciding)"]
    overview = html.split("<h2>Overview</h2>")[1].split("</table>")[0]
    assert overview.count("<tr><td>") == 2           # one row per experiment
    assert "1 / 2" in overview and "1 / 1" in overview
    assert "v-failed" in overview and "a property check failed" in overview
    assert "over budget" in overview                  # exp-b: 30 s of a 10 s budget
    assert "95% t interval [0.4, 0.8], n = 3" in html
    assert "would settle it: ten seeds" in html
    assert ".scroll{overflow-x:auto" in html
    assert html.count('<div class="scroll"><table>') == html.count("<table>")


def test_report_md_is_written_beside_each_result(tmp_path):
    rec = _record(table_files=["table-1-wide-table.csv"])
    rec.save(tmp_path / "exp-a")
    (tmp_path / "exp-a" / "table-1-wide-table.csv").write_text("c0\n0\n")
    build_report(tmp_path)
    md = (tmp_path / "exp-a" / "report.md").read_text()
    assert md == experiment_markdown(rec)
    assert "**Verdict: inconclusive** (1 of 2 reproductions reproduced)" in md
    assert "## Properties" in md and "inconclusive: ten seeds" in md
    assert "[CSV](table-1-wide-table.csv)" in md
    html = (tmp_path / "index.html").read_text()
    assert 'href="exp-a/table-1-wide-table.csv"' in html


def test_load_results_separates_readable_and_unreadable(tmp_path):
    _record("exp-a").save(tmp_path / "exp-a")
    _write(tmp_path, "junk", "[]")
    loaded = load_results(tmp_path)
    assert [d for d, _ in loaded.records] == ["exp-a"]
    assert [p.parent.name for p, _ in loaded.problems] == ["junk"]


def test_report_escapes_html_from_results(tmp_path):
    claims = [Claim("<script>alert(1)</script>", "p", "o", "t", "reproduced")]
    _record("exp-a", claims=claims, paper="<b>x</b>").save(tmp_path / "exp-a")
    html = build_report(tmp_path).read_text()
    assert "<script>alert" not in html and "&lt;script&gt;" in html and "<b>x</b>" not in html
