"""The pipeline's stages: one module each (`prefgen/stages/<name>.py`), one signature.

Every stage module has

    load_config(params: dict | None) -> Config       # its typed config from params.yaml (None: the defaults)
    run(cfg: Config, paths: Paths, log) -> dict      # reads and writes `paths` only; returns its metrics

and may name `USER_ERRORS`, the exceptions that mean bad input rather than a bug. The table of stages
(prefgen/stage_table.py) says which params and paths each reads; prefgen/stage_cli.py makes a command
of each row; prefgen/stages/runner.py wraps every run in its MLflow run and metrics file. This package
holds nothing else: importing a stage runs this file, so what is here is every stage's code dependency.
"""
