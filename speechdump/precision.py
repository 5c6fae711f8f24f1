"""``--precision fp32|tf32|bf16|fp16``: the arithmetic of a job's forward passes.

- ``fp32`` (the default): float32 throughout, exact as without the option. On a GPU, TF32 is
  off for convolutions and matrix products (``compat.exact_float32``, run again here once the
  model is loaded, since ``import speechbrain`` turns TF32 on) and checked to be off on first
  use, so padded batches equal each utterance alone.
- ``tf32``: GPU only. float32 tensors, but cuDNN convolutions and cuBLAS matrix products round
  their inputs to TF32 (10-bit mantissas) on NVIDIA's matrix units (Ampere and later): faster
  products, and outputs that follow batch composition (the kernel chosen depends on the batch
  shape: padded batches differed from each utterance alone by up to 1e-2 of the hidden states'
  scale on an H200, bench/RESULTS.md).
- ``bf16`` / ``fp16``: the model's forward pass under ``torch.autocast(device type, dtype)``:
  the operators autocast lists (convolutions, linear layers and matrix products, attention)
  compute in the reduced type, the rest in float32, TF32 off as for ``fp32``. Outputs are
  converted back to float32 before they are stored: ``--dtype`` alone decides the storage type.
  bf16 keeps float32's range (8-bit mantissas: relative rounding 4e-3); fp16 rounds finer
  (10-bit mantissas: 5e-4) but overflows above 65504, so a reduced-precision pass whose output
  holds a non-finite value stops the job rather than store it.

Where each is allowed (``check``, run by the stage's pre-flight and again by each job):

- ``tf32`` and ``fp16`` need ``--device cuda``: TF32 is a GPU mode, and bfloat16 is the CPU's
  reduced type (oneDNN kernels on CPUs with AVX-512 BF16 or AMX), where float16 arithmetic is
  mostly emulated and adds overflow for nothing. ``bf16`` runs on the CPU too, which is also how
  it is tested without a GPU; it saves no time there on the models measured (README.md). A CPU
  whose oneDNN has no bfloat16 kernels (no AVX-512, or ``ONEDNN_MAX_CPU_ISA`` below
  ``AVX512_CORE``) is refused here, naming what is missing, rather than fail inside a job.
- Toolkits that write integer streams (``codec`` tokens) run in fp32 only. A code is the
  index of a quantizer's nearest codeword: reduced precision moves the latent enough to pick
  another codeword for every frame near a boundary, and in a residual quantizer every later
  codebook quantizes what the flipped one left. A flipped token is not an approximation of the
  fp32 token but another token, so such outputs would silently differ from fp32 ones in kind,
  not in rounding; they are refused rather than recorded. (k-means tokens are a stage of their
  own over stored features, which carry the precision they were extracted at.)
- Toolkits whose forward pass runs no model (``fbank``, ``mfcc``: features are computed in the
  loader threads) give the same outputs at any precision; the precision is recorded anyway.

The precision is part of each job's config (a change redoes the jobs), and the merge refuses
jobs of different precisions (``pyscripts/merge_outputs.py``).
"""

from __future__ import annotations

import contextlib
import os
from typing import Any, ContextManager, List, Optional, Sequence

from speechdump.errors import DeviceError, OptionError, PrecisionError
from speechdump.extractors.base import INT

FP32, TF32, BF16, FP16 = "fp32", "tf32", "bf16", "fp16"
PRECISIONS = (FP32, TF32, BF16, FP16)
DEFAULT = FP32
_GPU_ONLY = {
    TF32: "TF32 is a mode of NVIDIA GPUs' matrix units; CPU float32 products are float32 "
          "already",
    FP16: "float16 is a GPU type (on most CPUs it is emulated, and it overflows above 65504); "
          "use --precision bf16 for reduced precision on the CPU",
}
_AUTOCAST_DTYPES = {BF16: "bfloat16", FP16: "float16"}


def on_gpu(device: str) -> bool:
    return device.startswith("cuda")


def check(precision: str, device: str, streams: Sequence, toolkit: str) -> None:
    """The pre-flight of ``--precision``: an OptionError where it cannot apply (see the module
    docstring: GPU-only precisions on the CPU, reduced precision for integer streams)."""
    if precision not in PRECISIONS:
        raise OptionError(f"--precision {precision}: expected one of {', '.join(PRECISIONS)}")
    if precision in _GPU_ONLY and not on_gpu(device):
        raise OptionError(f"--precision {precision} needs --device cuda (this stage has "
                          f"--device {device}): {_GPU_ONLY[precision]}")
    if precision == BF16 and not on_gpu(device):
        problem = cpu_bf16_problem()
        if problem:
            raise OptionError(f"--precision bf16 on --device {device}: {problem}; use "
                              "--precision fp32")
    ints = [stream.name or "(one stream)" for stream in streams if stream.kind == INT]
    if precision != FP32 and ints:
        raise OptionError(
            f"--precision {precision}: --toolkit {toolkit} writes integer streams "
            f"({', '.join(ints)}), which run in fp32 only: a quantizer's code at reduced "
            f"precision is not a rounding of the fp32 code but, near a codeword boundary, "
            f"another code (speechdump/precision.py)")


def cpu_bf16_problem() -> Optional[str]:
    """Why this CPU cannot run bfloat16 forward passes, or None. Autocast sends them to
    oneDNN, whose bfloat16 kernels need its ``avx512_core`` ISA (avx512bw, avx512vl, avx512dq)
    or better; below it some primitives (the LSTM) are missing and a job would die in its first
    pass. torch asks oneDNN, so a cap (``ONEDNN_MAX_CPU_ISA``) counts as the CPU would."""
    import torch

    from speechdump.device import cpu_model

    if torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return None
    caps = [f"{name}={os.environ[name]}" for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")
            if name in os.environ]
    return (f"oneDNN has no bfloat16 kernels here: they need AVX-512 (avx512bw, avx512vl, "
            f"avx512dq) or AMX, and this CPU ({cpu_model()})"
            + (f" is capped by {' '.join(caps)}" if caps else " lacks them"))


def configure(precision: str, device: str) -> None:
    """Sets the process's TF32 switches for the job, once its model is loaded: on for ``tf32``,
    off (and checked: ``compat.exact_float32``) for the others. Nothing to do on the CPU, where
    ``check`` has left only ``fp32`` and ``bf16``. A GPU without bfloat16 (before Ampere) is a
    DeviceError for ``bf16``."""
    if not on_gpu(device):
        return
    import torch

    from speechdump import compat

    if precision != TF32:
        compat.exact_float32(device)
    else:
        compat.require(compat.TORCH_TF32, torch.backends.cudnn, "allow_tf32")
        compat.require(compat.TORCH_TF32, torch.backends.cuda.matmul, "allow_tf32")
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cuda.matmul.allow_tf32 = True
        if not (torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32):
            raise compat.error(compat.TORCH_TF32, "the switches read False after being set "
                                                  "to True")
    if precision == BF16 and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        raise DeviceError(f"--precision bf16: {torch.cuda.get_device_name(device)} has no "
                          "bfloat16 arithmetic; use --precision fp16 or fp32")


def forward_context(precision: str, device: str) -> ContextManager:
    """What a forward pass runs under: ``torch.autocast`` for ``bf16``/``fp16``, else nothing.
    Autocast is per thread, so it is entered in the thread that runs the forward pass."""
    if precision not in _AUTOCAST_DTYPES:
        return contextlib.nullcontext()
    import torch

    return torch.autocast(torch.device(device).type,
                          dtype=getattr(torch, _AUTOCAST_DTYPES[precision]))


def _arrays(output: Any) -> List:
    return list(output.values()) if isinstance(output, dict) else [output]


def check_finite(precision: str, outputs: Sequence) -> None:
    """At reduced precision, a forward pass whose output holds NaN or inf (fp16 overflows above
    65504) raises rather than be stored; at fp32 and tf32 outputs are not inspected."""
    if precision not in _AUTOCAST_DTYPES:
        return
    import numpy as np

    if not all(np.isfinite(array).all() for output in outputs for array in _arrays(output)
               if np.asarray(array).dtype.kind == "f"):
        raise PrecisionError(
            f"--precision {precision}: a forward pass of {len(outputs)} utterance(s) gave "
            f"NaN or inf (float16 overflows above 65504); rerun with --precision bf16 or fp32")
