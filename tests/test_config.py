"""Typed configs from params.yaml: the shipped file loads, and mistakes are named."""

import dataclasses
import re

import pytest

from prefgen.config import SECTIONS, section_config, tracking_config
from prefgen.data.config import IngestConfig
from prefgen.params import ConfigError, from_section, load_params
from prefgen.paths import Paths
from tests.conftest import ROOT


def test_shipped_params_load_into_typed_configs():
    params = load_params(ROOT / "params.yaml")
    cfg = section_config(params, "ingest")
    assert {key: getattr(cfg, key) for key in params["ingest"]} == params["ingest"]  # every value from the file, none defaulted
    assert tracking_config(params).experiment == "prefgen"


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"max_id_len": 10, "chunk_byte": 5}, "unknown key(s) ['chunk_byte']"),
        ({"max_id_len": "10"}, "params.ingest.max_id_len: expected int"),
        ({"max_id_len": True}, "expected an integer"),
        ({"max_id_len": 0}, "max_id_len must be >= 1"),
        ([1, 2], "expected a mapping"),
    ],
)
def test_mistakes_are_named(section, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(").replace(")", r"\)")):
        from_section(IngestConfig, section, "ingest")


def test_missing_params_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="params file not found"):
        load_params(tmp_path / "params.yaml")


def test_profiles_merge_over_shared_keys_and_are_recorded():
    from prefgen.config import section_config

    params = load_params(ROOT / "params.yaml")
    assert params["profile"] == "demo"
    for profile in ("demo", "quality"):
        for section in ("train_vq", "train_diffusion"):
            cfg = section_config(params | {"profile": profile}, section)
            assert cfg.profile == profile
            assert cfg.epochs == params[section]["profiles"][profile]["epochs"]
            assert cfg.seed == params[section]["seed"]  # a shared key


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"profile": "huge", "train_vq": {"profiles": {"demo": {}, "quality": {}}}}, "is 'huge' but params.train_vq.profiles has ['demo', 'quality']"),
        ({"train_vq": {"epochs": 3, "profiles": {"demo": {"epochs": 4}}}}, "['epochs'] set both in the section and in profiles.demo"),
        ({"train_vq": {"profiles": {"demo": {"epoch": 4}}}}, "unknown key(s) ['epoch']"),
        ({"train_vq": {"profiles": {"demo": {"block_out_channels": [16, 30]}}}}, "multiple of norm_num_groups=8"),
    ],
)
def test_profile_mistakes_are_named(params, message):
    from prefgen.config import section_config

    with pytest.raises(ConfigError) as err:
        section_config(params, "train_vq")
    assert message in str(err.value)


def test_the_top_level_image_size_reaches_every_stage_that_reads_images_and_no_section_may_set_its_own():
    from prefgen.config import section_config

    params = shipped_params() | {"image_size": 128}
    for name in ("prepare_images", "image_store", "train_clip", "visual_features", "train_vq", "train_oracle"):
        assert section_config(params, name).image_size == 128, name
    assert section_config(params, "synth").image_size == 64  # the world's render size is the world's own
    with pytest.raises(ConfigError, match=r"params.train_vq.image_size: set it once, as the top-level `image_size`"):
        section_config(params | {"train_vq": params["train_vq"] | {"image_size": 64}}, "train_vq")
    with pytest.raises(ConfigError, match=r"params.train_clip.image_size"):
        section_config(params | {"image_size": 0}, "train_clip")


def shipped_params() -> dict:
    return load_params(ROOT / "params.yaml")


def test_every_section_of_the_shipped_params_passes_its_checks_in_both_profiles():
    from prefgen.config import SECTIONS, section_config

    params = shipped_params()
    assert sorted(set(params) - {"profile", "image_size", "paths"}) == sorted(SECTIONS)
    for profile in ("demo", "quality"):
        for name in SECTIONS:
            section_config(params | {"profile": profile}, name)  # raises ConfigError on a type or range it refuses


def test_a_missing_or_misspelled_section_is_named_not_replaced_by_defaults():
    from prefgen.config import section_config

    params = shipped_params()
    without = {k: v for k, v in params.items() if k != "train_w"}
    with pytest.raises(ConfigError, match="the 'train_w' section is missing"):
        section_config(without, "train_w")
    misspelled = without | {"train_ww": params["train_w"]}
    with pytest.raises(ConfigError, match=r"unknown section 'train_ww' \(did you mean 'train_w'\?\)"):
        section_config(misspelled, "train_w")
    with pytest.raises(ConfigError, match=r"params.train_w: expected a mapping, got None"):
        section_config(without | {"train_w": None}, "train_w")


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        ("train_graph", "max_epochs", -3, "params.train_graph.max_epochs: -3 is out of range; it must be >= 1"),
        ("train_graph", "batch_size", 0, "params.train_graph.batch_size: 0 is out of range; it must be >= 1"),
        ("train_clip", "lr", -0.001, "params.train_clip.lr: -0.001 is out of range; it must be > 0"),
        ("train_w", "lr", 0, "params.train_w.lr: 0.0 is out of range; it must be > 0"),
        ("train_mapper", "lr", float("nan"), "params.train_mapper.lr: nan is out of range; it must be > 0"),
        ("synth", "homophily", 1.5, "params.synth.homophily: 1.5 is out of range; it must be >= 0 and <= 1"),
        ("train_diffusion", "epochs", 0, "params.train_diffusion.epochs: 0 is out of range; it must be >= 1"),  # a profile key
        ("nightly", "threads", 0, "params.nightly.threads: 0 is out of range; it must be >= 1"),
    ],
)
def test_nonsense_values_are_named(section, key, value, message):
    from prefgen.config import section_config
    from tests.conftest import shrink

    params = shipped_params()
    shrink(params, section, **{key: value})
    with pytest.raises(ConfigError) as err:
        section_config(params, section)
    assert str(err.value) == message


def test_duplicate_keys_and_invalid_yaml_name_the_file_and_line(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train_w:\n  lr: 0.001\n  hidden: 8\n  lr: 0.1\n")
    with pytest.raises(ConfigError) as err:
        load_params(path)
    assert str(err.value) == f"{path}:4: invalid YAML: duplicate key 'lr'"
    path.write_text("train_w:\n  lr: 0.001\n  hidden: [8, 16\n")
    with pytest.raises(ConfigError, match=rf"^{path}:4: invalid YAML: "):
        load_params(path)
    path.write_text("base: &b {lr: 0.1}\ntrain_w:\n  <<: *b\n  lr: 0.2\n")  # a merge key overrides on purpose
    assert load_params(path)["train_w"] == {"lr": 0.2}


def test_a_campaign_file_with_a_duplicate_key_is_named(tmp_path):
    from prefgen.serving.config import load_campaign

    path = tmp_path / "c.yaml"
    path.write_text("name: c\nprompts: [a star]\nsegments: {kinds: [group]}\nname: d\n")
    with pytest.raises(ConfigError, match=rf"^{path}:4: invalid YAML: duplicate key 'name'$"):
        load_campaign(path)


@pytest.mark.parametrize("night", ["2026-11-28", "single", "t1-rerun", "a" * 64])
def test_a_night_is_a_date_or_a_slug(night):
    from prefgen.serving.config import check_night

    assert check_night(night) == night


@pytest.mark.parametrize("night", ["../escape", "..", ".", "/tmp/x", "a/b", "Night", "", "x\n", "a" * 65, "-x", "2026-02-30",
                                   "nuit blanche"])
def test_a_night_that_is_no_date_or_slug_is_refused(night):
    from prefgen.serving.config import check_night

    with pytest.raises(ConfigError, match="night"):
        check_night(night)


def test_configs_hold_hyperparameters_and_the_catalogue_holds_every_path():
    """No section's config has a path of the pipeline's data (they are in `paths:` only), and the shipped catalogue
    names every key once; one folder may be two roles (the world's raw folder holds its photos)."""
    params = load_params(ROOT / "params.yaml")
    catalogue = Paths.from_params(params)
    others = {key: value for key, value in params["paths"].items() if key != "photos"}  # photos: the raw folder, by design
    shipped = set(others.values())
    for name, cls in SECTIONS.items():
        if name == "tracking":  # where MLflow keeps its store: the tracking server's setting, not the pipeline's data
            continue
        for field in dataclasses.fields(cls):
            default = field.default if field.default is not dataclasses.MISSING else None
            assert not (isinstance(default, str) and default.startswith("data/")), f"{name}.{field.name} = {default!r}"
            assert not re.search(r"(_dir|_path)$|^(out|curve|metrics|split)$", field.name), f"{name}.{field.name} is a path"
        for key, value in (params.get(name) or {}).items():
            assert not (isinstance(value, str) and value.startswith("data/")), f"params.{name}.{key}: a path outside the catalogue"
    assert len(shipped) == len(others) and str(catalogue.split) == params["paths"]["split"]


def test_no_module_holds_a_pipeline_path_or_a_dated_note():
    """Paths live in the catalogue and history in BENCHMARKS.md and git, never in the code."""
    for file in sorted((ROOT / "prefgen").rglob("*.py")):
        text = file.read_text(encoding="utf-8")
        assert not re.search(r"data/(0\d_|truth|metrics|plots|checkpoints)", text), f"{file.relative_to(ROOT)} names a pipeline path"
        dated = re.search(r"\b20\d\d-\d\d-\d\d\b(?!T)", text)
        assert not dated, f"{file.relative_to(ROOT)} holds a dated note: {dated.group()}"


def test_the_shipped_catalogue_reads_the_worlds_images_where_synth_writes_them():
    """synth writes the world's PNGs into its raw folder: the photos the preparation reads are there."""
    paths = shipped_params()["paths"]
    assert paths["photos"] == paths["raw"]


def test_a_catalogue_may_leave_out_only_the_keys_the_worlds_evaluation_reads():
    """A platform's pipeline folder has no truth, oracle or generation evaluation: those keys read as not given, so a
    stage that needs one fails on a path that says so; any other key missing is still an error naming it."""
    params = shipped_params()
    without = params | {"paths": {k: v for k, v in params["paths"].items() if k not in ("truth", "oracle", "eval_generation")}}
    catalogue = Paths.from_params(without)
    assert [str(catalogue.truth), str(catalogue.oracle)] == ["<paths.truth not given>", "<paths.oracle not given>"]
    with pytest.raises(ConfigError, match="params.paths lacks split"):
        Paths.from_params(without | {"paths": {k: v for k, v in without["paths"].items() if k != "split"}})
