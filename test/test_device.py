"""describe_device: the device a job names in its log, or the error where it has none."""

import pytest
import torch

from speechdump.device import describe_device


@pytest.fixture
def two_gpus(monkeypatch):
    """torch.cuda as a job sees it on a machine whose GPUs 5 and 7 the launcher gave it."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,7")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index: f"GPU model {index}")


def test_the_cpu_is_named_as_given():
    assert describe_device("cpu") == "cpu"


def test_a_gpu_is_named_with_the_devices_the_launcher_gave(two_gpus):
    assert describe_device("cuda") == "cuda:0 (GPU model 0; CUDA_VISIBLE_DEVICES=5,7)"
    assert describe_device("cuda:1") == "cuda:1 (GPU model 1; CUDA_VISIBLE_DEVICES=5,7)"


def test_a_gpu_index_past_the_visible_ones_is_refused(two_gpus):
    with pytest.raises(ValueError, match=r"--device cuda:2: this job sees 2 CUDA device\(s\) "
                                         r"\(CUDA_VISIBLE_DEVICES=5,7\)"):
        describe_device("cuda:2")


def test_no_visible_gpu_is_refused(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"--device cuda: no CUDA device is visible to this job "
                                         r"\(CUDA_VISIBLE_DEVICES=unset\)"):
        describe_device("cuda")
