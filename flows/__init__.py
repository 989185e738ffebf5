"""Prefect flows: thin wiring over prefgen's library (retrain, nightly, demo)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Flows are entry points (python -m flows.X, a Prefect worker): they, not the library, keep the process off the
# Hugging Face hub, set here because huggingface_hub reads these once, at its import.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from prefgen.config import checked_params  # noqa: E402
from prefgen.params import ConfigError  # noqa: E402


def params_or_exit(root: str) -> None:
    """Name a params.yaml mistake in one line and exit 2 before a flow starts (Prefect would print a traceback)."""
    try:
        checked_params(Path(root) / "params.yaml")
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
