"""The audit report: paired statistics, tables, plots, rendered from one results file."""

from __future__ import annotations

from umdbench.report.render import load_document, render_report
from umdbench.report.stats import (
    PairedRow,
    PairedStats,
    comparison_label,
    holm_adjust,
    paired_comparison,
    paired_table,
)
from umdbench.report.tables import illusion_table, verdict_table

__all__ = [
    "PairedRow",
    "PairedStats",
    "comparison_label",
    "holm_adjust",
    "illusion_table",
    "load_document",
    "paired_comparison",
    "paired_table",
    "render_report",
    "verdict_table",
]
