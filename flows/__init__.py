"""Prefect flows: thin wiring over prefgen's library (retrain, nightly, demo)."""

from __future__ import annotations

import sys
from pathlib import Path

from prefgen.config import ConfigError, checked_params


def params_or_exit(root: str) -> None:
    """Name a params.yaml mistake in one line and exit 2 before a flow starts (Prefect would print a traceback)."""
    try:
        checked_params(Path(root) / "params.yaml")
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
