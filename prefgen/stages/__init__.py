"""Thin DVC entry points: read a stage's config, call the library, write outputs,
metrics and the MLflow run. One module per stage; dvc.yaml runs them through the CLI."""
