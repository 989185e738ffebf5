"""DVC stage `ingest`: params.yaml [ingest], the raw logs (paths.raw) -> Parquet tables (paths.tables)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from prefgen.data import ingest
from prefgen.data.config import IngestConfig
from prefgen.data.rawfiles import IngestError
from prefgen.params import section
from prefgen.paths import Paths

USER_ERRORS = (IngestError,)  # unreadable raw folder, no log files, tables folder locked or not a folder


def load_config(params: dict[str, Any] | None) -> IngestConfig:
    return section(params, IngestConfig, "ingest")


def run(cfg: IngestConfig, paths: Paths, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Ingest the raw files under paths.raw not yet in paths.tables, with progress on stderr unless TQDM_DISABLE is set."""
    quiet = os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true")  # tqdm's own switch silences the per-file lines too
    return ingest.run(cfg, paths.raw, paths.tables, progress=not quiet)
