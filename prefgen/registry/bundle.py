"""A bundle: every model one retrain made, in one folder, with a manifest of digests.

    bundle/
      manifest.json           format, digest, sha256 of every file below (lineage.json aside)
      models/<part>/...       graph, mapper, clip, vq, w, diffusion: the stage outputs, copied as they are
      catalogue.safetensors   G(v) of the train images: the sampler's prototype catalogue (METHOD.md 3.4)
      settings.json           the visual-feature and sampler settings the models were evaluated with
      lineage.json            where it came from: git commit, dvc.lock, training runs, raw logs

Only safetensors, JSON and Parquet files may be in a bundle; loading checks every
digest first, so a bundle whose files were swapped or edited is refused, and nothing
is ever unpickled. The digest covers the models, catalogue and settings, not the
lineage: the same models retrained from the same data give the same digest.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from prefgen.checkpoint import replace_folder
from prefgen.generation.config import GuidanceConfig
from prefgen.hashing import sha256_file
from prefgen.params import from_saved
from prefgen.serving.devices import resolve_device
from prefgen.vision.config import VisualFeaturesConfig

FORMAT = 1
MANIFEST, LINEAGE, SETTINGS, CATALOGUE = "manifest.json", "lineage.json", "settings.json", "catalogue.safetensors"
PARTS = ("graph", "mapper", "clip", "vq", "w", "diffusion")
SAFE_SUFFIXES = (".safetensors", ".json", ".parquet")  # formats read without executing anything


class BundleError(RuntimeError):
    """A bundle folder is incomplete, holds a file it may not, or does not match its manifest."""


def _files(folder: Path) -> dict[str, str]:
    """sha256 of every file under folder except the manifest and the lineage, by POSIX relative path."""
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name not in (MANIFEST, LINEAGE)}


def digest_of(files: dict[str, str]) -> str:
    return hashlib.sha256("".join(f"{path}\0{sha}\n" for path, sha in sorted(files.items())).encode()).hexdigest()


def _check_suffixes(paths: list[str], where: str) -> None:
    unsafe = [p for p in paths if not p.endswith(SAFE_SUFFIXES)]
    if unsafe:
        raise BundleError(f"{where}: {unsafe[:5]} are not safetensors, JSON or Parquet; a bundle holds nothing else")


def assemble(parts: dict[str, Path], catalogue, visual: VisualFeaturesConfig, sampler: GuidanceConfig,
             lineage: dict[str, Any], out: Path) -> str:
    """Copy the model folders into a new bundle at `out` (replacing it atomically); returns its digest."""
    missing = [name for name in PARTS if name not in parts or not parts[name].is_dir()]
    if missing:
        raise BundleError(f"cannot bundle: no model folder for {missing} ({ {n: str(parts.get(n)) for n in missing} }); "
                          "run the training stages first")
    for name in PARTS:
        _check_suffixes([p.name for p in parts[name].rglob("*") if p.is_file()], f"model folder {parts[name]}")

    def write(tmp: Path) -> None:
        for name in PARTS:
            shutil.copytree(parts[name], tmp / "models" / name)
        save_file({"embeddings": catalogue.detach().contiguous().cpu()}, tmp / CATALOGUE)
        settings = {"visual_features": asdict(visual), "sampler": asdict(sampler)}
        (tmp / SETTINGS).write_text(json.dumps(settings, indent=2, sort_keys=True), encoding="utf-8")
        files = _files(tmp)
        manifest = {"format": FORMAT, "digest": digest_of(files), "files": files}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True), encoding="utf-8")
        (tmp / LINEAGE).write_text(json.dumps(lineage, indent=2, sort_keys=True, default=str), encoding="utf-8")

    out.parent.mkdir(parents=True, exist_ok=True)
    replace_folder(out, write)
    return read_manifest(out)["digest"]


def read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    if not path.is_file():
        raise BundleError(f"{folder}: not a bundle (no {MANIFEST})")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("format") != FORMAT:
        raise BundleError(f"{path}: bundle format {manifest.get('format')!r}, this prefgen reads format {FORMAT}")
    return manifest


def verify(folder: Path) -> str:
    """The bundle's digest after checking every file against the manifest; BundleError naming what differs."""
    manifest = read_manifest(folder)
    found = _files(folder)
    _check_suffixes(list(found), str(folder))
    expected = manifest["files"]
    changed = sorted(p for p in expected if p in found and found[p] != expected[p])
    missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if changed or missing or extra:
        raise BundleError(f"{folder}: does not match its manifest (changed {changed[:5]}, missing {missing[:5]}, "
                          f"unexpected {extra[:5]}); refusing to load it")
    if digest_of(found) != manifest["digest"]:
        raise BundleError(f"{folder}: manifest digest does not match its own file list; refusing to load it")
    return manifest["digest"]


@dataclass(frozen=True)
class Bundle:
    """A verified bundle folder and its settings; `pipeline()` builds the guided sampler from it."""

    folder: Path
    digest: str
    visual: VisualFeaturesConfig
    sampler: GuidanceConfig

    @classmethod
    def load(cls, folder: Path) -> Bundle:
        digest = verify(folder)
        settings = json.loads((folder / SETTINGS).read_text(encoding="utf-8"))
        visual = from_saved(VisualFeaturesConfig, settings["visual_features"])  # the CLIP tower is the bundle's own models/clip
        return cls(folder, digest, visual, GuidanceConfig(**settings["sampler"]))

    def model_dir(self, part: str) -> Path:
        return self.folder / "models" / part

    def lineage(self) -> dict[str, Any]:
        path = self.folder / LINEAGE
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    def pipeline(self, sampler: GuidanceConfig | None = None, device: str = "auto"):
        """The guided sampler with every one of this bundle's models on `device`: auto (a GPU where torch sees one),
        cpu, cuda or a named GPU such as cuda:1 (ConfigError where there is none); `sampler` overrides the bundle's
        own settings."""
        from prefgen.generation.assemble import build_pipeline

        return build_pipeline(self.model_dir("diffusion"), self.model_dir("vq"), self.model_dir("w"), self.model_dir("mapper"),
                              self.model_dir("graph"), self.model_dir("clip"), self.visual, load_file(self.folder / CATALOGUE)["embeddings"],
                              sampler or self.sampler, resolve_device(device))
