"""End to end on real photos (issue 39, part 3): a platform made from the photos PyPI packages ship goes through
`prefgen new` -> `prefgen retrain` -> `prefgen promote` -> `prefgen nightly` on the micro profile to a gallery whose
images all load in a headless browser; the registry commands work from inside the folder, and a second retrain on
the same logs runs nothing. All real: DVC, Prefect's temporary server, MLflow's SQLite store, Chromium.
docs/TESTING.md states its time (a test does not time)."""

import json
import os

import pytest

from tests.pipeline_folder.folder_commands import micro, prefgen
from tests.pipeline_folder.photo_platform import write_photo_platform
from tests.serving.test_gallery import CHROMIUM, chromium_page

pytestmark = pytest.mark.slow


def every_image_loads(gallery) -> None:
    pages = [gallery / "index.html", *sorted((gallery / "segments").glob("*.html"))]
    with chromium_page() as (page, failed):
        for path in pages:
            page.goto(path.as_uri())
            assert page.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)"), path
        assert page.evaluate("document.images.length") > 0 and not failed


def test_photos_from_pypi_packages_give_a_bundle_a_champion_and_a_gallery(tmp_path):
    platform = write_photo_platform(tmp_path / "platform")
    folder = tmp_path / "mine"
    prefgen(tmp_path, "new", "mine", "--logs", str(platform["logs"]), "--images", str(platform["images"]),
            "--catalog", str(platform["catalog"]))
    micro(folder)

    retrain = prefgen(tmp_path, "retrain", "mine")
    assert "registered bundle version 1" in retrain.stdout and "ran ingest, split" in retrain.stdout
    assert "no gate metric: a bundle becomes champion only by `prefgen promote`" in retrain.stdout
    prepared = json.loads((folder / "data" / "metrics" / "prepare_images.json").read_text())
    assert prepared["prepared"] == 240 and prepared["rejected"] == 1, prepared  # the one TIFF Pillow cannot read
    assert (folder / "mlruns.db").is_file() and (folder / "data" / "campaign" / "segments.parquet").is_file()
    bundles = prefgen(folder, "bundles").stdout
    assert "challenger" in bundles and "champion" not in bundles
    prefgen(folder, "promote", "--bundle", "1", "--reason", "its gallery looked right")
    night = prefgen(tmp_path, "nightly", "mine", "--night", "first")
    assert "from prefgen-bundle/1" in night.stdout and " 0 rejected" in night.stdout
    images = sorted((folder / "data" / "07_nightly" / "default" / "first" / "images").glob("*.png"))
    assert images and "prefgen-bundle version 1" in prefgen(folder, "lineage", str(images[0])).stdout
    prefgen(folder, "regenerate", str(images[0]))
    again = prefgen(tmp_path, "retrain", "mine")
    assert "ran no stage (all up to date)" in again.stdout and "still version 1" in again.stdout
    assert not [path for path in folder.rglob("*truth*")]

    gallery = folder / "data" / "07_nightly" / "default" / "first" / "gallery"
    if CHROMIUM.exists() or os.environ.get("CI"):  # CI must run it (require_chromium fails there without a browser)
        every_image_loads(gallery)
