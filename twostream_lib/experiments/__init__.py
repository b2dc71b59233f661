"""The experiments of the paper as a few calls each: what the notebooks run.

    cfg = setup("demo")                      # profile, threads, seeds
    data = prepare_data(cfg)                 # the data set (generated for the demo)
    result = run_table(cfg, data, "table1")  # every row of a table, ours beside the paper's
    result.show(); result.show_findings()

Rooms: :mod:`.data` (set-up, data bundles, sampling), :mod:`.cache` (run folders keyed by content, the
in-memory memo), :mod:`.streams` (single streams, late fusion, Figure 1), :mod:`.fusion` (fusion
variants and their trained heads), :mod:`.findings` (claims and statistics), :mod:`.registry` (every
table: :data:`TABLES`), :mod:`.cli` (``python -m twostream_lib train``).
"""
from twostream_lib.config import load_profile
from twostream_lib.errors import ConfigError, DataError

from .cache import MEMO, RUN_FIELDS, run_dir, weights_digest
from .data import DataBundle, clip_sampling, data_card, data_figure, limit_videos, prepare_data, setup, split_summary
from .findings import Claim, Finding, accuracy_row, check_claims, format_findings, summary_markdown, write_findings
from .fusion import Variant, backbone_name, build_fused, run_fusion
from .registry import OURS, OURS_LATE, TABLES, TableResult, TableSpec, idt_scores, run_table, train_run_towers
from .streams import (Streams, figure1, late_fusion, stream_scores, stream_summary, test_views, train_stream,
                      train_streams, train_towers)

__all__ = [
    "setup", "prepare_data", "DataBundle", "split_summary", "data_card", "data_figure", "limit_videos",
    "clip_sampling", "run_dir", "weights_digest", "MEMO", "RUN_FIELDS", "Streams", "train_stream",
    "train_streams", "train_towers", "stream_scores", "late_fusion", "stream_summary", "test_views", "figure1", "Variant",
    "backbone_name", "build_fused", "run_fusion", "Claim", "Finding", "check_claims", "format_findings",
    "accuracy_row", "write_findings", "summary_markdown", "TABLES", "TableSpec", "TableResult", "run_table", "train_run_towers", "OURS", "OURS_LATE", "idt_scores",
    "load_profile", "ConfigError", "DataError",
]
