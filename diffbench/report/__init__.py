"""Reports of benchmark runs: tables, figures, Markdown/HTML pages (``build``) and regression compare."""

from diffbench.report.build import (
    FAMILY_SECTIONS,
    FigureRef,
    Note,
    Section,
    Table,
    batch_config_table,
    build_report,
    coefficient_of_variation,
    convergence_epoch,
    generic_table,
    load_failures,
    rows_to_frame,
)
from diffbench.report.compare import (
    METRIC_DIRECTIONS,
    CompareResult,
    Comparison,
    compare_runs,
    format_table,
    metric_direction,
    write_compare_report,
)

__all__ = [
    "FAMILY_SECTIONS",
    "METRIC_DIRECTIONS",
    "CompareResult",
    "Comparison",
    "FigureRef",
    "Note",
    "Section",
    "Table",
    "batch_config_table",
    "build_report",
    "coefficient_of_variation",
    "compare_runs",
    "convergence_epoch",
    "format_table",
    "generic_table",
    "load_failures",
    "metric_direction",
    "rows_to_frame",
    "write_compare_report",
]
