"""The evaluation set's digest: the files of the catalogue keys `registry.eval_set` names, and the judging protocol."""

import pytest

from prefgen.config import section_config
from prefgen.params import load_params
from prefgen.paths import Paths
from prefgen.registry.register import eval_set_digest
from tests.conftest import ROOT


def test_the_digest_follows_the_named_files_and_the_protocol_not_the_threads(tmp_path):
    params = load_params(ROOT / "params.yaml")
    paths, cfg = Paths.from_params(params).rooted(tmp_path), section_config(params, "registry")
    assert cfg.eval_set == ["split", "truth"]
    paths.split.parent.mkdir(parents=True)
    paths.split.write_bytes(b"split")
    paths.truth.mkdir(parents=True)
    (paths.truth / "world.json").write_text("{}")
    first = eval_set_digest(cfg, params, paths, tmp_path)

    def protocol(**changes):
        return params | {"eval_generation": params["eval_generation"] | changes}

    assert eval_set_digest(cfg, protocol(threads=1), paths, tmp_path) == first  # how it ran, not what it judged
    assert eval_set_digest(cfg, protocol(seed=1), paths, tmp_path) != first
    (paths.truth / "world.json").write_text('{"world": "other"}')
    assert eval_set_digest(cfg, params, paths, tmp_path) != first
    paths.split.unlink()
    with pytest.raises(FileNotFoundError, match="eval_set names split"):
        eval_set_digest(cfg, params, paths, tmp_path)


def test_a_folder_s_digest_pins_its_judges_and_the_protocols_of_its_own_gate(tmp_path):
    from prefgen.pipeline_folder.folder_params import folder_registry

    params = load_params(ROOT / "params.yaml")
    params = {key: value for key, value in params.items() if key != "eval_generation"} | {
        "registry": folder_registry(params["registry"])}
    paths, cfg = Paths.from_params(params).rooted(tmp_path), section_config(params, "registry")
    assert cfg.eval_set == ["split", "judges"]
    paths.split.parent.mkdir(parents=True)
    paths.split.write_bytes(b"split")
    paths.judges.mkdir(parents=True)
    (paths.judges / "scorer.safetensors").write_bytes(b"judge")
    first = eval_set_digest(cfg, params, paths, tmp_path)
    assert eval_set_digest(cfg, params | {"eval_generation": {"seed": 1}}, paths, tmp_path) == first  # not its gate's
    for stage in ("eval_holdout", "eval_guidance"):
        assert eval_set_digest(cfg, params | {stage: params[stage] | {"seed": 5}}, paths, tmp_path) != first
    (paths.judges / "scorer.safetensors").write_bytes(b"another judge")
    assert eval_set_digest(cfg, params, paths, tmp_path) != first
