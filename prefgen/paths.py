"""The catalogue of paths: where every stage reads and writes, from params.yaml's `paths:` section.

dvc.yaml reads the same keys with DVC's templating (`${paths.tables}`), so a second pipeline on other
data reuses every stage by giving it another catalogue. Relative paths are taken from the folder the
stage runs in (the project root). No path has a default anywhere else: a catalogue lacking a key is
an error naming it, except the keys only the synthetic world's evaluation stages use (OPTIONAL_KEYS), which a
platform's pipeline folder (prefgen/pipeline_folder/) leaves out.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefgen.params import ConfigError


# Read only by the stages that judge a synthetic world (its truth, the oracle, the generation evaluation): a catalogue
# without them reads them as not given, so such a stage fails on a path that says so.
OPTIONAL_KEYS = ("truth", "oracle", "eval_generation")


@dataclass(frozen=True)
class Paths:
    """Every artefact of the pipeline, by role."""

    raw: Path  # raw social logs and the images they name (ingest reads it recursively; synth writes it)
    photos: Path  # the folder the image paths of the tables are relative to (the world's raw folder; a platform's photos)
    truth: Path  # a synthetic world's ground truth: read by evaluation stages only
    tables: Path  # ingest's Parquet tables: events/, quarantine/, follows, memberships, images, sources
    split: Path  # every image id -> train | val | cold
    centrality: Path  # per-individual and per-(group, member) social features
    prepared: Path  # every catalogued image as a square RGB PNG at the models' size, and why the others have none
    visual: Path  # semantic, style and colour vectors of every image
    images: Path  # the train and val images decoded once into uint8 shards at the models' size (what image trainers stream)
    clip: Path  # the semantic image tower
    graph: Path  # Step 1's model: segments, p_g, image embeddings, attention
    mapper: Path  # Step 2's GAN mapper
    vq: Path  # Step 3's VQ autoencoder
    w: Path  # Step 3's preference conditioning W
    diffusion: Path  # Step 3's UNet and scheduler
    oracle: Path  # the evaluation oracle (never trained on a world image)
    eval_generation: Path  # the generation evaluation's images and per-pair tables
    judges: Path  # Step 3's judges that never guide: a second scorer and a second CLIP tower (eval/judges.py)
    eval_guidance: Path  # the judged evaluation of guidance: per-image table and contact sheet
    bundle: Path  # where the registry stages a bundle before logging it
    nightly: Path  # the nightly image sets: <nightly>/<campaign>/<night>/
    checkpoints: Path  # <checkpoints>/<model>/: not DVC outputs, so a killed run resumes
    metrics: Path  # <metrics>/<stage>.json: DVC metrics files
    plots: Path  # <plots>/<stage>.csv: per-epoch curves (DVC plots)

    @classmethod
    def from_params(cls, params: dict[str, Any] | None, overrides: dict[str, Path] | None = None,
                    needed: tuple[str, ...] | None = None) -> Paths:
        """The catalogue of a params file, with `overrides` (explicit paths of a standalone run) on top.

        With a params file every key but OPTIONAL_KEYS must be there. Without one (`params` None: a standalone run on explicit
        paths), only the `needed` keys must be given; the others name themselves as not given, so a stage that
        reads one it did not declare fails on a path that says so.
        """
        names = [f.name for f in dataclasses.fields(cls)]
        given = _checked_section(params, names) if params is not None else {}
        values = {name: Path(value) for name, value in given.items()}
        values |= {name: Path(value) for name, value in (overrides or {}).items() if value is not None}
        required = [name for name in names if name not in OPTIONAL_KEYS] if params is not None else list(needed or names)
        missing = [name for name in required if name not in values]
        if missing:
            raise ConfigError(f"params.paths lacks {', '.join(missing)}: give every catalogue key (see params.yaml)")
        return cls(**{name: values.get(name, Path(f"<paths.{name} not given>")) for name in names})

    def rooted(self, root: Path) -> Paths:
        """The same catalogue with relative paths taken from `root`."""
        return dataclasses.replace(self, **{f.name: root / getattr(self, f.name) for f in dataclasses.fields(self)})

    def metrics_file(self, stage: str) -> Path:
        return self.metrics / f"{stage}.json"

    def curve_file(self, stage: str) -> Path:
        return self.plots / f"{stage}.csv"

    def checkpoint_dir(self, model: str) -> Path:
        return self.checkpoints / model


def _checked_section(params: dict[str, Any], names: list[str]) -> dict[str, str]:
    """params.yaml's `paths:` mapping, every key a known catalogue key and every value a non-empty string."""
    given = params.get("paths")
    if not isinstance(given, dict):
        raise ConfigError("params: the 'paths' section is missing or not a mapping (the catalogue of paths; see the shipped params.yaml)")
    unknown = sorted(set(given) - set(names), key=str)
    if unknown:
        close = difflib.get_close_matches(str(unknown[0]), names, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else f"; known: {names}"
        raise ConfigError(f"params.paths: unknown key '{unknown[0]}'{hint}")
    wrong = sorted(name for name, value in given.items() if not isinstance(value, str) or not value)
    if wrong:
        raise ConfigError(f"params.paths.{wrong[0]}: {given[wrong[0]]!r} is not a path; give a non-empty string")
    return given
