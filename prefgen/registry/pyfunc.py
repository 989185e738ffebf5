"""The pyfunc loader of `prefgen-bundle` versions: MLflow calls `_load_pyfunc(data_path)`.

Loading reads safetensors, JSON and Parquet only, after checking every file against
the bundle's manifest (bundle.py); nothing is unpickled, so a registry holding a
tampered bundle cannot run code through it.

    model = mlflow.pyfunc.load_model("models:/prefgen-bundle@champion")
    out = model.predict(pd.DataFrame({"segment": ["grp:g7"], "prompt": ["a star"], "seed": [0]}))
    # -> segment, prompt, seed, image_sha256, png (bytes), preference_score, text_score
    bundle = model.get_raw_model()          # the verified Bundle, e.g. bundle.pipeline()
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from prefgen.registry.bundle import Bundle
from prefgen.serving.image_sets import BatchRequest, BundleRef, generate_batch

COLUMNS = ("segment", "prompt", "seed")


class BundleModel:
    """A loaded bundle: `predict` makes one image per input row (rows of one segment and prompt share a batch), on
    `device` (auto: a GPU where torch sees one)."""

    def __init__(self, bundle: Bundle, device: str = "auto"):
        self.bundle, self.device, self._pipe = bundle, device, None

    def get_raw_model(self) -> Bundle:
        """What `PyFuncModel.get_raw_model()` returns: the verified bundle."""
        return self.bundle

    def predict(self, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        missing = [c for c in COLUMNS if c not in model_input.columns]
        if missing:
            raise ValueError(f"prefgen-bundle predicts from columns {list(COLUMNS)}; missing {missing}")
        if self._pipe is None:
            self._pipe = self.bundle.pipeline(device=self.device)
        ref = BundleRef("pyfunc", "", self.bundle.digest)
        out = []
        for (segment, prompt), rows in model_input.groupby(["segment", "prompt"], sort=False):
            request = BatchRequest(str(segment), str(prompt), tuple(int(s) for s in rows["seed"]))
            for data, row in generate_batch(self._pipe, request, ref):
                out.append({"segment": row["segment"], "prompt": row["prompt"], "seed": row["seed"], "png": data,
                            "image_sha256": row["image_sha256"], "preference_score": row["preference_score"],
                            "text_score": row["text_score"]})
        return pd.DataFrame(out)


def _load_pyfunc(data_path: str) -> BundleModel:
    return BundleModel(Bundle.load(Path(data_path)))
