"""The compute device a job was given and how it spends its CPU cores: checked before any
work, and named for its log and bench rows."""

import os
from typing import Tuple

from speechdump.errors import DeviceError, OptionError


def describe_device(device: str) -> str:
    """``cpu``, or the GPU behind ``cuda`` / ``cuda:N`` as this job sees it, e.g. ``cuda:0
    (NVIDIA H200; CUDA_VISIBLE_DEVICES=3)``: which of the machine's GPUs the launcher gave.
    Raises DeviceError where this job sees no such device."""
    if not device.startswith("cuda"):
        return device
    import torch  # jobs that find their work done never pay for it

    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "unset")
    if not torch.cuda.is_available():
        raise DeviceError(f"--device {device}: no CUDA device is visible to this job "
                         f"(CUDA_VISIBLE_DEVICES={visible})")
    index = torch.device(device).index
    index = torch.cuda.current_device() if index is None else index
    if index >= torch.cuda.device_count():
        raise DeviceError(f"--device {device}: this job sees {torch.cuda.device_count()} CUDA "
                         f"device(s) (CUDA_VISIBLE_DEVICES={visible})")
    return f"cuda:{index} ({torch.cuda.get_device_name(index)}; CUDA_VISIBLE_DEVICES={visible})"


def job_cpus() -> int:
    """The CPUs this job was given: Slurm's allocation in a Slurm job (``--cpus-per-task``, one
    by default; its CPU binding may be off, so the affinity can hold every core of the node),
    else the CPUs this process may run on."""
    for name in ("SLURM_CPUS_PER_TASK", "SLURM_JOB_CPUS_PER_NODE"):
        value = os.environ.get(name, "").split("(")[0].split(",")[0]
        if value.isdigit() and int(value) > 0:
            return int(value)
    return len(os.sched_getaffinity(0))


# Kernel-selection settings of torch, oneDNN, MKL and OpenBLAS: a job's floats follow them.
KERNEL_SETTINGS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA",
                   "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR", "OPENBLAS_CORETYPE")
# The CPU flags the kernels choose by.
KERNEL_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
                "amx_tile", "amx_bf16")


def _cpu_fields() -> dict:
    """The first processor's block of ``/proc/cpuinfo`` (empty where there is none)."""
    fields = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    break  # the first processor's block is enough
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def cpu_flags() -> set:
    """The CPU's feature flags (``avx2``, ``avx512f``, ...)."""
    return set(_cpu_fields().get("flags", "").split())


def cpu_model() -> str:
    """The CPU's model name and family (``/proc/cpuinfo``), e.g. ``AMD EPYC (family 25)``, and
    the flags of ``KERNEL_FLAGS`` it has."""
    fields = _cpu_fields()
    flags = set(fields.get("flags", "").split())
    family = f" (family {fields['cpu family']})" if "cpu family" in fields else ""
    present = " ".join(flag for flag in KERNEL_FLAGS if flag in flags)
    return (f"{fields.get('model name', 'unknown CPU')}{family}; flags: "
            f"{present or 'none of ' + ' '.join(KERNEL_FLAGS)}")


def cpu_description() -> str:
    """What decides the CPU kernels of this process: the CPU, torch's capability line and the
    kernel-selection settings in force (for bench rows and CI logs)."""
    import torch

    settings = [f"{name}={os.environ[name]}" for name in KERNEL_SETTINGS if name in os.environ]
    return (f"CPU: {cpu_model()}; torch {torch.__version__} CPU capability "
            f"{torch.backends.cpu.get_cpu_capability()}; "
            f"{' '.join(settings) or 'no kernel settings'}")


CPU_LAYOUTS = ("auto", "intra_op", "passes")


def check_cpu_layout(requested: str, device: str, extractor_cls) -> None:
    """Pre-flight of ``--cpu_layout``: an OptionError where it cannot apply."""
    if requested == "auto":
        return
    if not device.startswith("cpu"):
        raise OptionError(f"--cpu_layout {requested}: it lays out a CPU job's cores; --device "
                          f"{device} runs the model on the GPU (leave --cpu_layout auto)")
    if requested == "passes" and not extractor_cls.concurrent_forward:
        raise OptionError(f"--cpu_layout passes: {extractor_cls.name} cannot run forward passes "
                          "on several threads at once (concurrent_forward); use intra_op")


def cpu_layout(requested: str, device: str, extractor_cls, cores: int) -> Tuple[str, int, int]:
    """(layout, forward passes at once, torch threads each) of a job given ``cores`` CPUs:
    ``--cpu_layout`` as given, or for ``auto`` the extractor's declared ``cpu_layout``. On a
    GPU: one pass, and the cores as torch threads for what runs on the CPU."""
    check_cpu_layout(requested, device, extractor_cls)
    if not device.startswith("cpu"):
        return "gpu", 1, cores
    layout = extractor_cls.cpu_layout if requested == "auto" else requested
    if layout == "passes" and extractor_cls.concurrent_forward:
        return layout, cores, 1
    return "intra_op", 1, cores
