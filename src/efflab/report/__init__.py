"""The reproduction report: one self-contained ``index.html`` over a folder of results, and a
``report.md`` per experiment."""

from efflab.report.html import Loaded, build_report, load_results
from efflab.report.markdown import experiment_markdown

__all__ = ["Loaded", "build_report", "experiment_markdown", "load_results"]
