"""``report.md``: the short Markdown version of one experiment's section of the report."""

from __future__ import annotations

from efflab.experiments.base import CLAIM_KINDS
from efflab.experiments.record import ResultRecord

KIND_TITLES = {
    "reproduction": "Reproductions (the paper's claims; they decide the verdict)",
    "property": "Properties (checks of our own code or of an identity; a failure is a bug)",
    "measurement": "Measurements (time and memory on this machine; shown, never deciding)",
}


def interval_text(interval: dict | None) -> str:
    """``95% t interval [0.6, 0.64], n = 5`` from a claim's interval, or ``""``."""
    if not isinstance(interval, dict):
        return ""

    lo, hi = interval.get("lo"), interval.get("hi")
    level = interval.get("level")
    head = f"{100 * level:.0f}% " if isinstance(level, (int, float)) else ""
    method = interval.get("method") or ""
    n = interval.get("n")
    tail = f", n = {n}" if n is not None else ""
    # an infinite bound is saved as null (JSON has no infinity)
    lo_s = "-inf" if not isinstance(lo, (int, float)) else f"{lo:.4g}"
    hi_s = "inf" if not isinstance(hi, (int, float)) else f"{hi:.4g}"
    return f"{head}{method} interval [{lo_s}, {hi_s}]{tail}".strip()


def _md(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def experiment_markdown(record: ResultRecord) -> str:
    """The ``report.md`` of one run."""
    budget = f" (budget {record.budget_s:.0f} s)" if record.budget_s is not None else ""
    over = " **over budget**" if record.over_budget else ""
    if record.ran_beside:
        over += f" (beside {', '.join(record.ran_beside)})"
    passed, total = record.reproductions_passed
    lines = [f"# {record.experiment}", "", f"Paper: {record.paper}", "",
             f"Checks: {record.checks}", "",
             f"Profile: {record.profile} · seed {record.seed} · wall time "
             f"{record.wall_time_s:.1f} s{budget}{over} · device "
             f"{record.environment.get('device_name', '?')}", "",
             f"**Verdict: {record.verdict}** ({passed} of {total} reproductions reproduced)", ""]
    for kind in CLAIM_KINDS:
        claims = record.claims_of(kind)
        if not claims:
            continue
        lines += [f"## {KIND_TITLES[kind]}", "",
                  "| claim | paper | ours | tolerance | verdict |", "|---|---|---|---|---|"]
        for c in claims:
            ours = c.ours + (f" ({interval_text(c.interval)})" if c.interval else "")
            verdict = c.verdict + (f": {c.settle}" if c.verdict == "inconclusive" else "")
            lines.append("| " + " | ".join(_md(x) for x in (c.text, c.paper, ours, c.tolerance,
                                                             verdict)) + " |")
        lines.append("")
    for fig in record.figures:
        lines += [f"![{fig}]({fig})", ""]
    for t, name in zip(record.tables, record.table_files + [""] * len(record.tables)):
        lines += [f"### {t.title}" + (f" ([CSV]({name}))" if name else ""), "",
                  "| " + " | ".join(_md(c) for c in t.columns) + " |",
                  "|" + "---|" * len(t.columns)]
        lines += ["| " + " | ".join(_md(x) for x in row) + " |" for row in t.rows]
        lines += ([""] + [t.note] if t.note else []) + [""]
    if record.error:
        lines += ["## Error", "", "```", record.error.rstrip(), "```", ""]
    return "\n".join(lines)
