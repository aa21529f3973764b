"""Reports: codebook plots and side-by-side comparison of evaluated runs (``python -m medvq.report compare``)."""

from medvq.report.compare import compare_runs, load_run, markdown_table
from medvq.report.plots import plot_code_distances, plot_code_frequencies, plot_codebook_pca
from medvq.report.run_info import checkpoint_run_info, read_run_info, update_run_info, write_run_info

__all__ = [
    "checkpoint_run_info",
    "compare_runs",
    "load_run",
    "markdown_table",
    "plot_code_distances",
    "plot_code_frequencies",
    "plot_codebook_pca",
    "read_run_info",
    "update_run_info",
    "write_run_info",
]
