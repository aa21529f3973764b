"""Reports: codebook plots, side-by-side comparison of evaluated runs (``python -m medvq.report compare``) and model
cards (``MODEL_CARD.md``, ``python -m medvq.report card``)."""

from medvq.report.compare import compare_runs, load_run, markdown_table
from medvq.report.model_card import model_card, write_model_card
from medvq.report.plots import plot_code_distances, plot_code_frequencies, plot_codebook_pca
from medvq.report.run_info import checkpoint_run_info, read_run_info, update_run_info, write_run_info

__all__ = [
    "checkpoint_run_info",
    "compare_runs",
    "load_run",
    "markdown_table",
    "model_card",
    "plot_code_distances",
    "plot_code_frequencies",
    "plot_codebook_pca",
    "read_run_info",
    "update_run_info",
    "write_model_card",
    "write_run_info",
]
