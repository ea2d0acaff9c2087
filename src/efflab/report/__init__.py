"""The reproduction report: one self-contained ``index.html`` over a folder of results."""

from efflab.report.html import build_report, load_results

__all__ = ["build_report", "load_results"]
