"""A platform's data as `prefgen new` takes it: a logs folder with events and an image catalogue, photos elsewhere."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from tests.conftest import event, write_jsonl

# A 1x1 PNG: `prefgen new` never opens a photo; the catalogue only has to name files that are there.
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC")
CAPTIONS = ["a red boat", "a red boat", "a dog", "", "a red boat", "a dog", "a cat"]


def write_platform(root: Path, captions: list[str] = CAPTIONS) -> dict[str, Path]:
    """logs/ (events.jsonl, images.jsonl) and photos/pics/*.png under `root`; the catalogue's paths are relative to photos/."""
    logs, photos = root / "logs", root / "photos"
    (photos / "pics").mkdir(parents=True)
    for index in range(len(captions)):
        (photos / "pics" / f"p{index}.png").write_bytes(PNG)
    write_jsonl(logs / "events.jsonl", [event(event_id=f"e{i}", target_id=f"img{i}") for i in range(len(captions))])
    catalog = write_jsonl(logs / "images.jsonl", [{"image_id": f"img{i}", "path": f"pics/p{i}.png", "caption": caption}
                                                  for i, caption in enumerate(captions)])
    return {"logs": logs, "images": photos, "catalog": catalog}


@pytest.fixture
def platform(tmp_path) -> dict[str, Path]:
    return write_platform(tmp_path / "platform")
