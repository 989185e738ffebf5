"""The AGREE/ConsRec reader and importer: clear errors, and real data through ingest."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from prefgen.data.config import IngestConfig
from prefgen.data.ingest import run as ingest
from prefgen.preference.grouprec import FormatError, densify, import_to_raw_logs, input_report, read_dataset

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


def test_an_id_beyond_int64_is_named(tmp_path):
    with pytest.raises(FormatError, match=r"userRatingTrain.txt:2: id '1234567890123456789012' is out of range"):
        read_dataset(_tiny(tmp_path / "ds", **{"userRatingTrain.txt": "0 1\n1234567890123456789012 2\n"}))


def test_sparse_ids_are_renumbered_to_the_same_dense_dataset(tmp_path):
    dense = densify(read_dataset(_tiny(tmp_path / "a")))
    big = 10**15  # users 0,1 -> big, big+7; items 1,2,3 -> 5, 900, 10**12; group 0 -> 42
    sparse = _tiny(tmp_path / "b", **{
        "userRatingTrain.txt": f"{big} 5\n{big} 900\n{big + 7} 900 5 100\n", "groupRatingTrain.txt": "42 5\n",
        "userRatingTest.txt": f"{big} {10**12}\n", "userRatingNegative.txt": f"({big},{10**12}) 5 900\n",
        "groupRatingTest.txt": "42 900\n", "groupRatingNegative.txt": f"(42,900) 5 {10**12}\n",
        "groupMember.txt": f"42 {big},{big + 7}\n", "userFollow.txt": f"{big}:{big + 7} {big}\n{big + 7}:{big}\n"})
    renumbered = densify(read_dataset(sparse))
    for name in ("user_train", "group_train", "follows"):
        assert np.array_equal(getattr(renumbered, name), getattr(dense, name)), name
    for name in ("user_test", "group_test"):
        a, b = getattr(renumbered, name), getattr(dense, name)
        assert all(np.array_equal(getattr(a, f), getattr(b, f)) for f in ("ids", "positives", "negatives")), name
    assert renumbered.members == dense.members == {0: [0, 1]}


def test_input_report_counts_and_names_what_the_data_lacks(tmp_path):
    folder = _tiny(tmp_path / "ds", **{
        "userRatingTrain.txt": "0 1\n0 1\n1 2\n",  # a duplicate row
        "userRatingTest.txt": "5 9\n", "userRatingNegative.txt": "(5,9) 1 2\n",  # unseen user, unseen item
        "groupRatingTest.txt": "3 2\n", "groupRatingNegative.txt": "(3,2) 1 9\n",  # a group with no members
        "userFollow.txt": "0:5\n"})  # member 1 is not in the follow graph
    report = input_report(read_dataset(folder))
    assert report == {
        "test users with no training interactions": {"count": 1, "examples": [5]},
        "test groups with no training interactions": {"count": 1, "examples": [3]},
        "test positives never seen in training (user)": {"count": 1, "examples": [9]},
        "groups with interactions but no members": {"count": 1, "examples": [3]},
        "members missing from the follow graph": {"count": 1, "examples": [1]},
        "duplicate training rows": {"count": 1, "examples": ["user 0 item 1"]},
    }
    clean = _tiny(tmp_path / "clean", **{"userRatingTest.txt": "0 2\n", "userRatingNegative.txt": "(0,2) 1 3\n"})
    assert input_report(read_dataset(clean)) == {}
