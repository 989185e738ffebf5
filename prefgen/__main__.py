import sys

from prefgen.cli import app

# Line-buffered even into a pipe (dvc repro, the Prefect flow, a log file): per-epoch progress shows as it happens.
sys.stdout.reconfigure(line_buffering=True)
app()
