import os
import sys

# The entry point, not the library, keeps the process off the Hugging Face hub (read once, at huggingface_hub's import).
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from prefgen.cli import app  # noqa: E402

# Line-buffered even into a pipe (dvc repro, the Prefect flow, a log file): per-epoch progress shows as it happens.
sys.stdout.reconfigure(line_buffering=True)
app()
