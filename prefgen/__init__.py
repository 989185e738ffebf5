"""prefgen: images that fit a social audience.

The three steps of the method live in three places (see docs/ARCHITECTURE.md):
Step 1 social preference, Step 2 visual preference mapper, Step 3 guided generation.
The foundation here is the data spine they all stand on: the social-log contract
(`prefgen.data.contract`), ingest to Parquet (`prefgen.data.ingest`), typed configs
(`prefgen.config`), MLflow tracking (`prefgen.tracking`) and the DVC pipeline helpers
(`prefgen.pipeline`) that Prefect flows in `flows/` call.
"""

__version__ = "0.1.0"
