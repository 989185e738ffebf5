"""benchmarks/demo.py's params edits: the same demo at another image size or on another world."""

import importlib.util

import pytest
import yaml

from tests.conftest import ROOT

spec = importlib.util.spec_from_file_location("demo_benchmark", ROOT / "benchmarks" / "demo.py")
demo = importlib.util.module_from_spec(spec)
spec.loader.exec_module(demo)


def test_settings_edit_dotted_keys_with_yaml_values(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text((ROOT / "params.yaml").read_text())
    demo.set_params(params, ["image_size=128", "synth.world=world-v1-128", "paths.raw=data/01_raw/world-v1-128"])
    edited = yaml.safe_load(params.read_text())
    assert edited["image_size"] == 128 and edited["synth"]["world"] == "world-v1-128"
    assert edited["paths"]["raw"] == "data/01_raw/world-v1-128" and edited["synth"]["seed"] == 20261127


@pytest.mark.parametrize("setting", ["synth.wrld=x", "nosuch.key=1", "image_size", "image_size.deeper=1"])
def test_a_key_params_yaml_lacks_or_a_setting_without_a_value_is_refused(tmp_path, setting):
    params = tmp_path / "params.yaml"
    params.write_text((ROOT / "params.yaml").read_text())
    with pytest.raises(SystemExit, match=f"--set {setting}: expected KEY=VALUE"):
        demo.set_params(params, [setting])
