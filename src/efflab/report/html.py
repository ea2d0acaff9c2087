"""Build ``index.html`` from the ``*/results.json`` files of a run folder.

The page is self-contained apart from the PNG figures beside it (referenced relatively, so
the folder can be moved or served as is): an overview table with one row per experiment
(experiment, paper, verdict, reproductions passed / total, wall time against its budget),
then one section per experiment with its claims grouped by kind (reproductions, properties,
measurements; intervals and what would settle an ``inconclusive`` one), figures, tables (with
their CSV files), config and environment, and the traceback of a failed run. Every table
scrolls inside its own box on a narrow screen.

A ``results.json`` that cannot be read as a result record (hand-edited, foreign, a folder) is
listed with its path and the reason, and the rest of the report is still built; a figure
that a record names but the folder lacks is reported the same way. ``build_report`` also
writes each readable record's ``report.md`` (:mod:`efflab.report.markdown`).
"""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from efflab.experiments.base import CLAIM_KINDS, EXPERIMENT_VERDICTS
from efflab.experiments.record import RESULTS, RecordError, ResultRecord, load_record
from efflab.io import atomic_write_text
from efflab.report.markdown import KIND_TITLES, experiment_markdown, interval_text

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0 auto;max-width:1180px;
padding:24px;color:#1d232a;line-height:1.45}
h1{font-size:1.7em;margin-bottom:.2em}
h2{margin-top:2em;border-bottom:2px solid #e4e7eb;padding-bottom:.2em}
h3{margin:1.2em 0 .3em;font-size:1.05em;color:#34495e}
.sub{color:#5b6673}.scroll{overflow-x:auto;max-width:100%;margin:.8em 0 1.2em}
table{border-collapse:collapse;width:100%;font-size:.92em}
th,td{border:1px solid #d9dee3;padding:5px 8px;text-align:left;vertical-align:top}
th{background:#f3f5f7}tr:nth-child(even) td{background:#fafbfc}
.v{font-weight:600;padding:2px 8px;border-radius:10px;white-space:nowrap;display:inline-block}
.v-reproduced{background:#d8f3dc;color:#1b5e20}.v-partly{background:#fff3cd;color:#7a5600}
.v-not-reproduced{background:#fde2e1;color:#8e1b12}.v-failed{background:#e8e3f3;color:#4a2f86}
.v-inconclusive{background:#e6e9ed;color:#39424c}.v-reused{background:#e3eefc;color:#1a4c8b}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #e4e7eb}
figcaption{color:#5b6673;font-size:.85em}pre{background:#f6f8fa;padding:10px;overflow-x:auto;
font-size:.85em}details{margin:.5em 0}summary{cursor:pointer;color:#34495e}
.counts span{margin-right:14px}.note{color:#5b6673;font-size:.88em}.over{color:#b3261e}
.problem{color:#8e1b12}
"""


@dataclass
class Loaded:
    """The readable records of a folder (with their folder names) and the unreadable ones."""

    records: list[tuple[str, ResultRecord]] = field(default_factory=list)
    problems: list[tuple[Path, str]] = field(default_factory=list)


def load_results(folder: str | Path) -> Loaded:
    """Every ``NAME/results.json`` directly below ``folder`` (hidden working folders skipped):
    the readable ones as records, the others as (path, reason)."""
    folder = Path(folder)
    loaded = Loaded()
    for path in sorted(folder.glob(f"*/{RESULTS}")):
        if path.parent.name.startswith("."):
            continue
        try:
            loaded.records.append((path.parent.name, load_record(path)))
        except RecordError as e:
            loaded.problems.append((path, e.reason))
    return loaded


def _badge(verdict: str) -> str:
    return f'<span class="v v-{escape(verdict.replace(" ", "-"))}">{escape(verdict)}</span>'


def _fmt_time(sec: float | None) -> str:
    if sec is None:
        return "-"
    return f"{sec:.1f} s" if sec < 120 else f"{sec / 60:.1f} min"


def _cell(x: Any) -> str:
    if isinstance(x, float):
        return escape(f"{x:.4g}")
    return escape("" if x is None else str(x))


def _scroll(table_html: str) -> str:
    return f'<div class="scroll">{table_html}</div>'


def _beside(rec: ResultRecord) -> str:
    """Which experiments ran at the same time (``reproduce --parallel``), or ''."""
    return f"beside {', '.join(rec.ran_beside)}" if rec.ran_beside else ""


def _wall(rec: ResultRecord) -> str:
    text = _fmt_time(rec.wall_time_s)
    beside = f'<div class="note">{escape(_beside(rec))}</div>' if rec.ran_beside else ""
    if rec.budget_s is None:
        return text + beside
    over = rec.over_budget
    return (f'{text}<div class="note{" over" if over else ""}">budget {_fmt_time(rec.budget_s)}'
            f'{" (over budget)" if over else ""}</div>{beside}')


def _overview(records: list[tuple[str, ResultRecord]]) -> str:
    rows = []
    for d, rec in records:
        passed, total = rec.reproductions_passed
        why = ""
        if rec.status != "ok":
            why = '<div class="note">run failed: see its section</div>'
        elif rec.verdict == "failed":
            why = '<div class="note">a property check failed (a bug): see its section</div>'
        rows.append(f'<tr><td><a href="#{escape(d)}">{escape(rec.experiment)}</a></td>'
                    f"<td>{escape(rec.paper)}</td><td>{_badge(rec.verdict)}{why}</td>"
                    f"<td>{passed} / {total}</td><td>{_wall(rec)}</td></tr>")
    return _scroll("<table><thead><tr><th>experiment</th><th>paper</th><th>verdict</th>"
                   "<th>reproductions passed</th><th>wall time</th></tr></thead><tbody>"
                   + "".join(rows) + "</tbody></table>")


def _claims(rec: ResultRecord) -> str:
    parts = []
    for kind in CLAIM_KINDS:
        claims = rec.claims_of(kind)
        if not claims:
            continue
        rows = []
        for c in claims:
            interval = interval_text(c.interval)
            ours = escape(c.ours) + (f'<div class="note">{escape(interval)}</div>'
                                     if interval else "")
            settle = (f'<div class="note">would settle it: {escape(c.settle)}</div>'
                      if c.verdict == "inconclusive" and c.settle else "")
            rows.append(f"<tr><td>{escape(c.text)}</td><td>{escape(c.paper)}</td>"
                        f"<td>{ours}</td><td>{escape(c.tolerance)}</td>"
                        f"<td>{_badge(c.verdict)}{settle}</td></tr>")
        parts.append(f"<h3>{escape(KIND_TITLES[kind])}</h3>" + _scroll(
            "<table><thead><tr><th>claim</th><th>paper</th><th>ours</th><th>tolerance</th>"
            "<th>verdict</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"))
    return "\n".join(parts)


def _table(t, d: str, csv_name: str) -> str:
    head = "".join(f"<th>{escape(str(c))}</th>" for c in t.columns)
    body = "".join("<tr>" + "".join(f"<td>{_cell(x)}</td>" for x in row) + "</tr>"
                   for row in t.rows)
    link = (f' <a class="note" href="{escape(d)}/{escape(csv_name)}">CSV</a>'
            if csv_name else "")
    note = f'<p class="note">{escape(t.note)}</p>' if t.note else ""
    return (f"<h4>{escape(t.title)}{link}</h4>"
            + _scroll(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            + note)


def _section(folder: Path, d: str, rec: ResultRecord, warn: Callable[[str], None]) -> str:
    parts = [f'<h2 id="{escape(d)}">{escape(rec.experiment)} {_badge(rec.verdict)}</h2>',
             f'<p class="sub">{escape(rec.paper)} — {escape(rec.checks)}</p>']
    passed, total = rec.reproductions_passed
    meta = [f"profile <b>{escape(rec.profile)}</b>", f"seed {escape(str(rec.seed))}",
            f"wall time {_fmt_time(rec.wall_time_s)}"
            + (f" (budget {_fmt_time(rec.budget_s)}{', over' if rec.over_budget else ''})"
               if rec.budget_s is not None else "")
            + (f", {escape(_beside(rec))}" if rec.ran_beside else ""),
            f"device {escape(str(rec.environment.get('device_name', '?')))}",
            f"{passed} of {total} reproductions reproduced"]
    parts.append(f'<p class="note">{" · ".join(meta)}</p>')
    parts.append(_claims(rec))
    for fig in rec.figures:
        if not (folder / d / fig).is_file():
            warn(f"{folder / d / fig}: figure named in {d}/{RESULTS} is missing")
            parts.append(f'<p class="problem">figure {escape(fig)} is missing from '
                         f"{escape(d)}/</p>")
            continue
        parts.append(f'<figure><img src="{escape(d)}/{escape(fig)}" alt="{escape(fig)}">'
                     f"<figcaption>{escape(fig)}</figcaption></figure>")
    names = rec.table_files + [""] * len(rec.tables)
    for t, name in zip(rec.tables, names):
        parts.append(_table(t, d, name if name and (folder / d / name).is_file() else ""))
    if rec.error:
        parts.append(f"<h4>Error</h4><pre>{escape(rec.error)}</pre>")
    if rec.config:
        parts.append("<details><summary>config (rerun it: <code>efflab run "
                     f"{escape(rec.experiment)} --config {escape(d)}/{RESULTS}</code>)"
                     "</summary><pre>"
                     f"{escape(json.dumps(rec.config, indent=2))}</pre></details>")
    if rec.environment:
        parts.append("<details><summary>environment</summary><pre>"
                     f"{escape(json.dumps(rec.environment, indent=2))}</pre></details>")
    return "\n".join(parts)


def _problems(problems: list[tuple[Path, str]]) -> str:
    if not problems:
        return ""
    items = "".join(f"<li><code>{escape(str(p))}</code>: {escape(r)}</li>" for p, r in problems)
    return (f'<h2 id="unreadable">Unreadable results ({len(problems)})</h2>'
            f'<p class="note">Left out of the report:</p><ul class="problem">{items}</ul>')


def build_report(folder: str | Path, title: str = "efflab reproduction report",
                 warn: Callable[[str], None] | None = None) -> Path:
    """Write ``folder/index.html`` (and each experiment's ``report.md``) from the results
    found there; return the page's path. Every unreadable result and missing figure is passed
    to ``warn`` (path and reason) and listed on the page; ``FileNotFoundError`` when there is
    nothing to report, ``OSError`` when ``index.html`` cannot be written."""
    folder = Path(folder)
    warn = warn or (lambda message: None)
    if not folder.is_dir():
        raise FileNotFoundError(f"report folder {folder} does not exist")
    index = folder / "index.html"
    if index.is_dir():
        raise IsADirectoryError(f"{index} is a folder: cannot write the report there")
    loaded = load_results(folder)
    for path, reason in loaded.problems:
        warn(f"{path}: {reason}")
    if not loaded.records and not loaded.problems:
        raise FileNotFoundError(f"no */{RESULTS} under {folder}: nothing to report")
    records = loaded.records
    for d, rec in records:
        try:
            atomic_write_text(folder / d / "report.md", experiment_markdown(rec))
        except OSError as e:
            warn(f"{folder / d / 'report.md'}: cannot be written ({e.strerror or e})")
    counts = {v: 0 for v in EXPERIMENT_VERDICTS}
    for _, rec in records:
        counts[rec.verdict] += 1
    profiles = sorted({rec.profile for _, rec in records})
    devices = sorted({str(rec.environment.get("device_name")) for _, rec in records
                      if rec.environment.get("device_name")})
    total = sum(rec.wall_time_s for _, rec in records)
    over = [rec.experiment for _, rec in records if rec.over_budget]
    # side by side, the experiments' wall times add up to more than the time it took
    side_by_side = ("summed (some ran side by side) "
                    if any(rec.ran_beside for _, rec in records) else "total ")
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    count_html = "".join(f"<span>{_badge(k)} × {v}</span>" for k, v in counts.items() if v)
    over_html = (f'<p class="note over">over budget: {escape(", ".join(over))}</p>'
                 if over else "")
    sections = "".join(_section(folder, d, rec, warn) for d, rec in records)
    html = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title><style>{_CSS}</style></head><body>
<h1>{escape(title)}</h1>
<p class="sub">{len(records)} experiments · profile {escape(", ".join(profiles))} ·
device {escape(", ".join(devices))} · {side_by_side}wall time {_fmt_time(total)} · built {now}</p>
<p class="counts">{count_html}</p>{over_html}
<p class="note">Only reproductions (a paper's claim checked against data generated here)
decide an experiment's verdict; properties check our own code (a failure is a bug: the
experiment is <i>failed</i>); measurements are shown, never deciding. A claim estimated from
seeds, draws or repeats is decided on its interval: <i>inconclusive</i> when the interval
straddles the tolerance. Time figures depend on the machine named above.</p>
<h2>Overview</h2>
{_overview(records)}
{_problems(loaded.problems)}
{sections}
</body></html>
"""
    return atomic_write_text(index, html)
