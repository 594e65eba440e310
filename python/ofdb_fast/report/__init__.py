"""HTML reports of PatchCore evaluate runs (``ofdb-fast report RUN_DIR``); see :mod:`.html`."""

from .html import EvalRun, load_run, load_runs, render_report, write_report

__all__ = ["EvalRun", "load_run", "load_runs", "render_report", "write_report"]
