"""Devices: a choice resolved against the GPUs a machine has, and one device per nightly worker (pure functions)."""

import pytest

from prefgen.params import ConfigError, section
from prefgen.serving.config import DaskConfig, NightlyConfig
from prefgen.serving.devices import device_for_worker, night_devices, resolve_device, visible_gpus, worker_devices


def test_workers_get_a_gpu_each_where_there_are_as_many_and_share_them_round_robin_where_fewer():
    assert worker_devices(2, n_gpus=4) == ["cuda:0", "cuda:1"]
    assert worker_devices(4, n_gpus=2) == ["cuda:0", "cuda:1", "cuda:0", "cuda:1"]
    assert worker_devices(3, n_gpus=1) == ["cuda:0"] * 3
    assert worker_devices(2, n_gpus=0) == ["cpu", "cpu"]
    with pytest.raises(ValueError, match="n_workers >= 1"):
        worker_devices(0, n_gpus=1)


def test_a_worker_finds_its_device_by_its_localcluster_number_and_any_other_process_takes_the_first():
    devices = worker_devices(3, n_gpus=3)
    assert [device_for_worker(devices, name) for name in (0, 1, 2, "2", 4)] == ["cuda:0", "cuda:1", "cuda:2", "cuda:2", "cuda:1"]
    assert device_for_worker(devices, None) == device_for_worker(devices, "tcp://10.0.0.1:4567") == "cuda:0"


def test_auto_takes_a_gpu_only_where_there_is_one_and_cuda_without_one_is_an_error():
    assert [resolve_device("auto", count=n) for n in (0, 2)] == ["cpu", "cuda"]
    assert resolve_device("cpu", count=2) == "cpu" and visible_gpus("cpu", count=2) == 0
    assert resolve_device("cuda", count=1) == "cuda" and resolve_device("cuda:1", count=2) == "cuda:1"
    with pytest.raises(ConfigError, match="device cuda was asked for, but torch sees no CUDA device"):
        resolve_device("cuda", count=0)
    with pytest.raises(ConfigError, match="'cuda:2' was asked for, but torch sees 2 CUDA device"):
        resolve_device("cuda:2", count=2)
    with pytest.raises(ConfigError, match=r"device 'gpu': give one of \['auto', 'cpu', 'cuda'\]"):
        resolve_device("gpu")


def test_each_nightly_worker_gets_its_device_and_the_in_process_run_gets_one():
    assert night_devices(NightlyConfig(dask=DaskConfig(n_workers=3)), gpus=2) == ["cuda:0", "cuda:1", "cuda:0"]
    assert night_devices(NightlyConfig(dask=DaskConfig(n_workers=2)), gpus=0) == ["cpu", "cpu"]
    assert night_devices(NightlyConfig(device="cpu", dask=DaskConfig(n_workers=2)), gpus=2) == ["cpu", "cpu"]
    assert night_devices(NightlyConfig(dask=DaskConfig(n_workers=0)), gpus=2) == ["cuda:0"]
    # A running scheduler's workers are on other machines: each resolves the choice itself.
    assert night_devices(NightlyConfig(dask=DaskConfig(address="tcp://h:8786")), gpus=0) == ["auto"]
    with pytest.raises(ConfigError, match="no CUDA device"):
        night_devices(NightlyConfig(device="cuda"), gpus=0)


def test_the_nightly_device_setting_is_one_of_the_choices():
    assert section({"nightly": {"device": "cpu"}}, NightlyConfig, "nightly").device == "cpu"
    with pytest.raises(ConfigError, match="'gpu' is not one of"):
        section({"nightly": {"device": "gpu"}}, NightlyConfig, "nightly")
