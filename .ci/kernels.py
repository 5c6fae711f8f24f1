#!/usr/bin/env python3
"""The CPU kernels of this machine, for CI: which CPU and settings, and a second kernel
configuration to run the exactness-sensitive tests under.

    kernels.py            the CPU, torch's capability line, and a fingerprint of the results of
                          a few kernels (a matrix product, a convolution, vectorised reductions)
    kernels.py --second   the settings of the second configuration for this CPU, as
                          ``NAME=value`` words: the vector ISA one step down for torch's own
                          kernels, oneDNN and MKL (OpenBLAS's core type is left as the machine
                          sets it: some CPUs need it)

CI runs the tests marked ``kernels`` again under the second configuration and checks that the
fingerprints differ, so that configuration really picks other kernels.
"""

import hashlib
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from speechdump.device import cpu_description, cpu_flags  # noqa: E402


def second_configuration() -> str:
    if "avx512f" in cpu_flags():
        return "ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2"
    return "ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=AVX MKL_ENABLE_INSTRUCTIONS=AVX"


def fingerprint() -> str:
    generator = torch.Generator().manual_seed(0)
    a, b = torch.randn(257, 513, generator=generator), torch.randn(513, 129, generator=generator)
    x = torch.randn(1, 80, 997, generator=generator)
    conv = torch.nn.Conv1d(80, 256, 5)
    for parameter in conv.parameters():  # all from the seeded generator: the same every run
        torch.nn.init.normal_(parameter, generator=generator)
    with torch.inference_mode():
        results = [a @ b, conv(x), torch.softmax(a, -1), torch.nn.functional.layer_norm(a, (513,)),
                   torch.nn.functional.gelu(a).sum(-1)]
    digest = hashlib.sha1()
    for result in results:
        digest.update(result.contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


if __name__ == "__main__":
    if sys.argv[1:] == ["--second"]:
        print(second_configuration())
    else:
        print(cpu_description())
        print(f"kernel fingerprint {fingerprint()}")
