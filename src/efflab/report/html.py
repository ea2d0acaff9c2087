"""Build ``index.html`` from the ``*/results.json`` files of a run folder.

The page is self-contained apart from the PNG figures beside it (referenced relatively, so
the folder can be moved or served as is): a summary table (experiment, paper, claim,
paper's number, ours, verdict, wall time), then one section per experiment with its claims,
figures, tables, config and environment, and the traceback of a failed run.
"""

from __future__ import annotations

import datetime as _dt
import json
from html import escape
from pathlib import Path
from typing import Any

from efflab.io import atomic_write_text

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:0 auto;max-width:1180px;
padding:24px;color:#1d232a;line-height:1.45}
h1{font-size:1.7em;margin-bottom:.2em}
h2{margin-top:2em;border-bottom:2px solid #e4e7eb;padding-bottom:.2em}
.sub{color:#5b6673}table{border-collapse:collapse;width:100%;margin:.8em 0 1.2em;font-size:.92em}
th,td{border:1px solid #d9dee3;padding:5px 8px;text-align:left;vertical-align:top}
th{background:#f3f5f7}tr:nth-child(even) td{background:#fafbfc}
.v{font-weight:600;padding:2px 8px;border-radius:10px;white-space:nowrap;display:inline-block}
.v-reproduced{background:#d8f3dc;color:#1b5e20}.v-partly{background:#fff3cd;color:#7a5600}
.v-not-reproduced{background:#fde2e1;color:#8e1b12}.v-failed{background:#e8e3f3;color:#4a2f86}
.v-reused{background:#e3eefc;color:#1a4c8b}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #e4e7eb}
figcaption{color:#5b6673;font-size:.85em}pre{background:#f6f8fa;padding:10px;overflow-x:auto;
font-size:.85em}details{margin:.5em 0}summary{cursor:pointer;color:#34495e}
.counts span{margin-right:14px}.note{color:#5b6673;font-size:.88em}.note.over{color:#b3261e}
"""


def load_results(folder: str | Path) -> list[dict[str, Any]]:
    """Every ``results.json`` directly below ``folder`` (hidden working folders skipped)."""
    folder = Path(folder)
    records = []
    for path in sorted(folder.glob("*/results.json")):
        if path.parent.name.startswith("."):
            continue
        try:
            rec = json.loads(path.read_text())
        except ValueError as e:
            rec = {"experiment": path.parent.name, "status": "failed", "claims": [],
                   "error": f"unreadable results.json: {e}", "figures": [], "tables": []}
        rec["_dir"] = path.parent.name
        records.append(rec)
    return records


def _verdict_badge(verdict: str | None) -> str:
    v = verdict or "failed"
    return f'<span class="v v-{v.replace(" ", "-")}">{escape(v)}</span>'


def _fmt_time(sec: Any) -> str:
    if not isinstance(sec, (int, float)):
        return "-"
    return f"{sec:.1f} s" if sec < 120 else f"{sec / 60:.1f} min"


def _cell(x: Any) -> str:
    if isinstance(x, float):
        return escape(f"{x:.4g}")
    return escape(str(x))


def _summary(records: list[dict[str, Any]]) -> str:
    rows = []
    for rec in records:
        anchor = escape(rec["_dir"])
        name = f'<a href="#{anchor}">{escape(rec["experiment"])}</a>'
        claims = rec.get("claims") or []
        budget = rec.get("budget_s")
        wall = _fmt_time(rec.get("wall_time_s"))
        if isinstance(budget, (int, float)) and budget == budget:
            over = (rec.get("wall_time_s") or 0) > budget
            wall += (f'<div class="note{" over" if over else ""}">budget {_fmt_time(budget)}'
                     f'{" (over)" if over else ""}</div>')
        if rec.get("status") != "ok" or not claims:
            why = ("run failed: see its section" if rec.get("status") != "ok"
                   else "no claim was checked")
            rows.append(f"<tr><td>{name}</td><td>{escape(rec.get('paper', '?'))}</td>"
                        f'<td colspan="3">{escape(rec.get("checks", ""))}'
                        f'<div class="note">{why}</div>'
                        f"</td><td>{_verdict_badge(rec.get('verdict'))}</td><td>{wall}</td></tr>")
            continue
        span = len(claims)
        for i, c in enumerate(claims):
            head = (f'<td rowspan="{span}">{name}<div>{_verdict_badge(rec.get("verdict"))}</div>'
                    f'</td><td rowspan="{span}">{escape(rec.get("paper", ""))}</td>'
                    if i == 0 else "")
            tail = f'<td rowspan="{span}">{wall}</td>' if i == 0 else ""
            rows.append(f"<tr>{head}<td>{escape(c['text'])}</td><td>{escape(c['paper'])}</td>"
                        f"<td>{escape(c['ours'])}<div class='note'>tolerance: "
                        f"{escape(c['tolerance'])}</div></td><td>{_verdict_badge(c['verdict'])}"
                        f"</td>{tail}</tr>")
    return ("<table><thead><tr><th>experiment</th><th>paper</th><th>claim</th>"
            "<th>paper's number</th><th>ours</th><th>verdict</th><th>wall time</th></tr>"
            "</thead><tbody>" + "".join(rows) + "</tbody></table>")


def _table(t: dict[str, Any]) -> str:
    head = "".join(f"<th>{escape(str(c))}</th>" for c in t["columns"])
    body = "".join("<tr>" + "".join(f"<td>{_cell(x)}</td>" for x in row) + "</tr>"
                   for row in t["rows"])
    note = f'<p class="note">{escape(t["note"])}</p>' if t.get("note") else ""
    return (f"<h4>{escape(t['title'])}</h4><table><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table>{note}")


def _section(rec: dict[str, Any]) -> str:
    d = rec["_dir"]
    parts = [f'<h2 id="{escape(d)}">{escape(rec["experiment"])} '
             f"{_verdict_badge(rec.get('verdict'))}</h2>",
             f'<p class="sub">{escape(rec.get("paper", ""))} — {escape(rec.get("checks", ""))}'
             f"</p>"]
    env = rec.get("environment") or {}
    meta = [f"profile <b>{escape(str(rec.get('profile', '?')))}</b>",
            f"seed {escape(str(rec.get('seed')))}",
            f"wall time {_fmt_time(rec.get('wall_time_s'))}",
            f"device {escape(str(env.get('device_name', '?')))}"]
    parts.append(f'<p class="note">{" · ".join(meta)}</p>')
    if rec.get("claims"):
        rows = "".join(
            f"<tr><td>{escape(c['text'])}</td><td>{escape(c['paper'])}</td>"
            f"<td>{escape(c['ours'])}</td><td>{escape(c['tolerance'])}</td>"
            f"<td>{_verdict_badge(c['verdict'])}</td></tr>" for c in rec["claims"])
        parts.append("<table><thead><tr><th>claim</th><th>paper</th><th>ours</th>"
                     f"<th>tolerance</th><th>verdict</th></tr></thead><tbody>{rows}</tbody></table>")
    for fig in rec.get("figures") or []:
        src = f"{d}/{fig}"
        parts.append(f'<figure><img src="{escape(src)}" alt="{escape(fig)}">'
                     f"<figcaption>{escape(fig)}</figcaption></figure>")
    for t in rec.get("tables") or []:
        parts.append(_table(t))
    if rec.get("error"):
        parts.append(f"<h4>Error</h4><pre>{escape(rec['error'])}</pre>")
    if rec.get("config"):
        parts.append("<details><summary>config</summary><pre>"
                     f"{escape(json.dumps(rec['config'], indent=2))}</pre></details>")
    if env:
        parts.append("<details><summary>environment</summary><pre>"
                     f"{escape(json.dumps(env, indent=2))}</pre></details>")
    return "\n".join(parts)


def build_report(folder: str | Path, title: str = "efflab reproduction report") -> Path:
    """Write ``folder/index.html`` from the results found there; return its path."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"report folder {folder} does not exist")
    records = load_results(folder)
    if not records:
        raise FileNotFoundError(f"no */results.json under {folder}: nothing to report")
    counts: dict[str, int] = {}
    for rec in records:
        key = rec.get("verdict") or "failed"
        counts[key] = counts.get(key, 0) + 1
    profiles = sorted({str(r.get("profile")) for r in records if r.get("profile")})
    devices = sorted({str((r.get("environment") or {}).get("device_name"))
                      for r in records if r.get("environment")})
    total = sum(r.get("wall_time_s") or 0 for r in records)
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    count_html = "".join(f"<span>{_verdict_badge(k)} × {v}</span>"
                         for k, v in sorted(counts.items()))
    html = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title><style>{_CSS}</style></head><body>
<h1>{escape(title)}</h1>
<p class="sub">{len(records)} experiments · profile {escape(", ".join(profiles))} ·
device {escape(", ".join(devices))} · total wall time {_fmt_time(total)} · built {now}</p>
<p class="counts">{count_html}</p>
<p class="note">Time figures depend on the machine named above; the paper's numbers come from
its own hardware. Verdicts follow the tolerance stated beside each claim.</p>
<h2>Summary</h2>
{_summary(records)}
{"".join(_section(r) for r in records)}
</body></html>
"""
    return atomic_write_text(folder / "index.html", html)
