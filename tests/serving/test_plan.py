"""A campaign's plan: segments selected by id, kind and table; unknown ids and bad prompts reported; stable unit keys."""

from pathlib import Path

import polars as pl
import pytest
import yaml

from prefgen.params import ConfigError
from prefgen.serving.config import Campaign, SegmentSelection, load_campaign
from prefgen.serving.plan import plan, unit_key

KNOWN = pl.DataFrame({"segment_id": ["grp:g0", "grp:g1", "grp:g2", "ind:u1", "ind:u2"],
                      "kind": ["group", "group", "group", "individual", "individual"]})


def campaign(**segments) -> Campaign:
    return Campaign("c1", SegmentSelection(**segments), ["a star", "a circle"], images_per_prompt=2, seed=10)


def test_units_cover_every_known_segment_and_prompt_with_the_campaign_seeds(tmp_path):
    done = plan(campaign(ids=["ind:u2", "grp:g1"]), KNOWN, tmp_path, "d" * 64, "{}")
    assert [(u.segment, u.prompt, u.seeds) for u in done.units] == [
        ("grp:g1", "a star", (10, 11)), ("grp:g1", "a circle", (10, 11)),
        ("ind:u2", "a star", (10, 11)), ("ind:u2", "a circle", (10, 11))]
    assert done.segments == ["grp:g1", "ind:u2"] and done.rejected == []


def test_kinds_tables_and_limits_select_segments(tmp_path):
    pl.DataFrame({"segment_id": ["ind:u1", "grp:g2", None]}).write_parquet(tmp_path / "seg.parquet")
    assert plan(campaign(kinds=["group"]), KNOWN, tmp_path, "d", "{}").segments == ["grp:g0", "grp:g1", "grp:g2"]
    assert plan(campaign(table="seg.parquet"), KNOWN, tmp_path, "d", "{}").segments == ["grp:g2", "ind:u1"]
    assert plan(campaign(kinds=["individual"], ids=["grp:g0"], limit=2), KNOWN, tmp_path, "d", "{}").segments == ["grp:g0", "ind:u1"]
    pl.DataFrame({"id": ["x"]}).write_parquet(tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="no `segment_id` column"):
        plan(campaign(table="bad.parquet"), KNOWN, tmp_path, "d", "{}")
    with pytest.raises(FileNotFoundError, match="absent.parquet"):
        plan(campaign(table="absent.parquet"), KNOWN, tmp_path, "d", "{}")


def test_unknown_segments_and_bad_prompts_are_reported_not_dropped(tmp_path):
    spec = Campaign("c1", SegmentSelection(ids=["grp:g0", "../x", "grp:nope"]), ["a star", "   ", "x" * 301, "a star"])
    done = plan(spec, KNOWN, tmp_path, "d", "{}")
    assert [(u.segment, u.prompt) for u in done.units] == [("grp:g0", "a star")]  # the repeated prompt once
    reported = {(r.what, r.value[:5]): r.reason for r in done.rejected}
    assert reported.keys() == {("segment", "../x"), ("segment", "grp:n"), ("prompt", "   "), ("prompt", "xxxxx")}
    assert "unknown segment" in reported[("segment", "../x")]
    assert reported[("prompt", "   ")] == "the prompt is empty"
    assert "301 characters" in reported[("prompt", "xxxxx")]


def test_unit_keys_change_with_whatever_decides_the_images():
    base = unit_key("d1", "grp:g0", "a star", (0, 1), '{"steps": 20}')
    assert base == unit_key("d1", "grp:g0", "a star", (0, 1), '{"steps": 20}') and len(base) == 64
    others = [unit_key("d2", "grp:g0", "a star", (0, 1), '{"steps": 20}'), unit_key("d1", "grp:g1", "a star", (0, 1), '{"steps": 20}'),
              unit_key("d1", "grp:g0", "a stars", (0, 1), '{"steps": 20}'), unit_key("d1", "grp:g0", "a star", (0, 2), '{"steps": 20}'),
              unit_key("d1", "grp:g0", "a star", (0, 1), '{"steps": 10}')]
    assert len({base, *others}) == 6


@pytest.mark.parametrize(("spec", "message"), [
    ({"name": "../up", "segments": {"ids": ["grp:g0"]}, "prompts": ["a"]}, "names a folder"),
    ({"name": "c", "segments": {"kinds": ["crowd"]}, "prompts": ["a"]}, "not kinds"),
    ({"name": "c", "segments": {}, "prompts": ["a"]}, "give ids, kinds or a table"),
    ({"name": "c", "segments": {"ids": ["grp:g0"]}, "prompts": []}, "at least one"),
    ({"name": "c", "segments": {"ids": ["grp:g0"]}, "prompts": ["a"], "images_per_prompt": 0}, "images_per_prompt"),
    ({"name": "c", "segments": {"ids": ["grp:g0"]}, "prompts": ["a"], "colour": "red"}, "unknown key"),
])
def test_bad_campaign_specs_are_refused_with_the_reason(tmp_path, spec, message):
    path = tmp_path / "campaign.yaml"
    path.write_text(yaml.safe_dump(spec))
    with pytest.raises(ConfigError, match=message):
        load_campaign(path)


def test_the_default_campaign_loads():
    spec = load_campaign(Path(__file__).resolve().parents[2] / "campaigns" / "default.yaml")
    assert spec.name == "default" and spec.prompts and spec.segments.ids
