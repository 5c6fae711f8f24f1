"""The compute device a job was given: checked before any work, and named for its log."""

import os

from speechdump.errors import DeviceError


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
