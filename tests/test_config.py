"""Typed configs from params.yaml: the shipped file loads, and mistakes are named."""

import pytest

from prefgen.config import ConfigError, IngestConfig, from_section, ingest_config, load_params, tracking_config
from tests.conftest import ROOT


def test_shipped_params_load_into_typed_configs():
    params = load_params(ROOT / "params.yaml")
    assert isinstance(ingest_config(params), IngestConfig)
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
