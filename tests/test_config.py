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
