"""The AGREE/ConsRec reader and importer: clear errors, and real data through ingest."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from prefgen.config import IngestConfig
from prefgen.data.ingest import run as ingest
from prefgen.preference.grouprec import FormatError, import_to_raw_logs, read_dataset

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _tiny(folder: Path, **overrides) -> Path:
    files = {
        "userRatingTrain.txt": "0 1\n0 2\n1 2 5 100\n",
        "groupRatingTrain.txt": "0 1\n",
        "userRatingTest.txt": "0 3\n",
        "userRatingNegative.txt": "(0,3) 1 2\n",
        "groupRatingTest.txt": "0 2\n",
        "groupRatingNegative.txt": "(0,2) 1 3\n",
        "groupMember.txt": "0 0,1\n",
        "userFollow.txt": "0:1 0\n1:0\n",
    } | overrides
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        if text is not None:
            (folder / name).write_text(text)
    return folder


def test_tiny_dataset_round_trip(tmp_path):
    counts = import_to_raw_logs(_tiny(tmp_path / "ds"), tmp_path / "raw")
    assert counts == {"click": 3, "group_click": 1, "join": 2, "follow": 2, "images": 3}
    tables = ingest(IngestConfig(), tmp_path / "raw", tmp_path / "tables")
    assert tables["quarantined"] == 0 and tables["tables"]["follows"] == 2 and tables["tables"]["memberships"] == 2
    assert sorted(p.name for p in (tmp_path / "raw" / "eval").iterdir()) == [
        "groupRatingNegative.txt", "groupRatingTest.txt", "userRatingNegative.txt", "userRatingTest.txt"]
    first = json.loads((tmp_path / "raw" / "events.jsonl").read_text().splitlines()[0])
    assert first["event_id"] == "userRatingTrain.txt:1" and first["type"] == "click"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"userRatingTrain.txt": "0 1\nx 2\n"}, "userRatingTrain.txt:2"),
        ({"groupMember.txt": "0 \n"}, "groupMember.txt:1"),
        ({"userRatingNegative.txt": "(0,4) 1 2\n"}, "not aligned"),
        ({"groupRatingNegative.txt": None}, "missing groupRatingNegative.txt"),
        ({"userFollow.txt": "0 1\n"}, "userFollow.txt:1"),
    ],
)
def test_bad_files_are_named(tmp_path, override, message):
    with pytest.raises(FormatError, match=message):
        read_dataset(_tiny(tmp_path / "ds", **override))


def test_cli_import(tmp_path):
    done = subprocess.run([sys.executable, "-m", "prefgen", "import", "grouprec", str(_tiny(tmp_path / "ds")), "--out", str(tmp_path / "raw")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1])["click"] == 3


@pytest.mark.skipif(not (DATA / "Mafengwo").is_dir(), reason=f"real data not present at {DATA / 'Mafengwo'}")
def test_mafengwo_imports_and_ingests_completely(tmp_path):
    counts = import_to_raw_logs(DATA / "Mafengwo", tmp_path / "raw")
    # 53,235 follow lines: 9 self-follows dropped, 32 repeated pairs collapse in the follows table.
    assert counts["click"] == 38_011 and counts["group_click"] == 2_600 and counts["follow"] == 53_235 - 9
    tables = ingest(IngestConfig(), tmp_path / "raw", tmp_path / "tables")
    assert tables["quarantined"] == 0 and tables["duplicates"] == 0
    assert tables["tables"]["follows"] == 53_203 - 9
