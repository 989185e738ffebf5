"""Running units with a tiny seeded sampler: images then the unit's part, done units skipped, the manifest in plan order."""

import polars as pl

from prefgen.serving import units
from prefgen.serving.image_sets import BundleRef
from prefgen.serving.plan import Unit, unit_key
from tests.generation.test_sampling import pipeline

REF = BundleRef("prefgen-bundle", "3", "d" * 64)
STAMP = {"generation_run_id": "r1", "campaign": "c1", "night": "n1"}


def unit(segment: str, prompt: str, seeds=(0, 1)) -> Unit:
    return Unit(segment, prompt, seeds, unit_key(REF.digest, segment, prompt, seeds, "{}"))


def test_a_segment_makes_only_the_units_not_done_and_the_manifest_follows_the_plan(tmp_path):
    pipe = pipeline()
    plan = [unit("a", "a"), unit("a", "b"), unit("b", "a")]
    first = units.run_segment(pipe, plan[:1], REF, tmp_path, STAMP, threads=1, log=lambda _: None)
    assert (first.made_units, first.skipped_units, first.images) == (1, 0, 2)
    made = {p: p.stat().st_mtime_ns for p in (tmp_path / "images").iterdir()}

    again = units.run_segment(pipe, plan[:2], REF, tmp_path, STAMP, threads=1, log=lambda _: None)
    assert (again.made_units, again.skipped_units, again.images) == (1, 1, 2)
    assert all(p.stat().st_mtime_ns == t for p, t in made.items())  # the done unit's images were not rewritten

    manifest, missing = units.finalize(tmp_path, plan)
    assert missing == [plan[2]]
    frame = pl.read_parquet(manifest)
    assert frame["unit"].to_list() == [plan[0].key] * 2 + [plan[1].key] * 2
    assert frame["seed"].to_list() == [0, 1, 0, 1] and set(frame["campaign"]) == {"c1"}
    assert all((tmp_path / f).is_file() for f in frame["file"])
    assert not list(tmp_path.rglob(".*.tmp"))


def test_temporaries_left_by_a_kill_are_swept(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / ".x.png.0123.tmp").write_bytes(b"half")
    (tmp_path / "images" / "keep.png").write_bytes(b"whole")
    assert units.sweep_temporaries(tmp_path) == 1
    assert [p.name for p in (tmp_path / "images").iterdir()] == ["keep.png"]
    assert units.sweep_temporaries(tmp_path / "absent") == 0
