"""A small, randomly initialised ESPnet speaker model of a real architecture, built offline.

The model is built by ESPnet's own task code, the way ``espnet2/bin/spk_train.py`` does before
training: ``SpeakerTask.get_parser()`` parses a ``--config`` modelled on the VoxCeleb recipe
(egs2/voxceleb/spk1/conf/tuning/train_rawnet3_sgdr_bs512_da_sampler_adam.yaml for RawNet3,
.../train_ecapa_Vox12_emb192_torchmelspec_subcentertopk.yaml for ECAPA-TDNN) with narrower
layers, ``SpeakerTask.build_model(args)`` builds it, and ``vars(args)`` is dumped to
``config.yaml`` as ``AbsTask.main_worker`` dumps it. The weights (``model.state_dict()``, as
ESPnet's ``*.pth`` files hold them) go to ``model.pth``. The result loads offline with
``Speech2Embedding(train_config=dest/config.yaml, model_file=dest/model.pth)``.

BatchNorm running statistics of a fresh model (mean 0, var 1) make a random network's eval-mode
activations collapse, so that every input gets nearly the same embedding; they are calibrated
here on synthetic audio (a cumulative average over a few train-mode passes, no gradient steps)
so that embeddings of different utterances differ, as a trained model's do.

    python test/build_espnet_model.py DEST [rawnet3|ecapa_tdnn]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import yaml

SPK_NUM = 8  # a few "speakers": only sizes the (unused at inference) AAM-softmax weight

_COMMON = {
    "pooling": "chn_attn_stat",
    "projector": "rawnet3",
    "preprocessor": "spk",
    "preprocessor_conf": {
        "target_duration": 3.0,
        "sample_rate": 16000,
        "num_eval": 10,
        # The recipes add MUSAN noise and RIRs in training; no corpora here.
        "noise_apply_prob": 0.0,
        "rir_apply_prob": 0.0,
    },
    "model_conf": {"extract_feats_in_collect_stats": False},
    "loss": "aamsoftmax",
    "loss_conf": {"margin": 0.3, "scale": 30},
    "optim": "adam",
    "optim_conf": {"lr": 0.001, "weight_decay": 0.00005},
}

_ARCHS = {
    # Raw waveform -> parametrised sinc filterbank -> RawNet3 (Res2Net blocks + AFMS).
    "rawnet3": {
        "frontend": "asteroid_frontend",
        "frontend_conf": {"sinc_stride": 16, "sinc_kernel_size": 251, "sinc_filters": 256,
                          "preemph_coef": 0.97, "log_term": 0.000001},
        "encoder": "rawnet3",
        "encoder_conf": {"model_scale": 8, "ndim": 1024, "output_size": 1536},
        "projector_conf": {"output_size": 256},
    },
    # torchaudio log-mel (mean-normalised) -> ECAPA-TDNN (SE-Res2Net blocks).
    "ecapa_tdnn": {
        "frontend": "melspec_torch",
        "frontend_conf": {"preemp": True, "n_fft": 512, "log": True, "win_length": 400,
                          "hop_length": 160, "n_mels": 80, "normalize": "mn"},
        "encoder": "ecapa_tdnn",
        "encoder_conf": {"model_scale": 8, "ndim": 1024, "output_size": 1536},
        "projector_conf": {"output_size": 192},
    },
}

# Narrower layers for tests on a CPU; the layer structure is unchanged.
_SMALL = {
    "rawnet3": {"frontend_conf": {"sinc_filters": 64},
                "encoder_conf": {"ndim": 64, "output_size": 96},
                "projector_conf": {"output_size": 64}},
    "ecapa_tdnn": {"frontend_conf": {"n_mels": 40},
                   "encoder_conf": {"ndim": 64, "output_size": 96},
                   "projector_conf": {"output_size": 64}},
}


def _config(encoder: str, small: bool) -> dict:
    if encoder not in _ARCHS:
        raise ValueError(f"encoder must be one of {sorted(_ARCHS)}, got {encoder!r}")
    config = {**_ARCHS[encoder], **_COMMON}
    config = {k: (dict(v) if isinstance(v, dict) else v) for k, v in config.items()}
    if small:
        for key, overrides in _SMALL[encoder].items():
            config[key].update(overrides)
    return config


def _synthetic_audio(rng: np.random.Generator, n: int, seconds: float, rate: int) -> torch.Tensor:
    """Voiced-like buzz (random pitch, harmonics, formant-ish envelope) plus noise, per row."""
    t = np.arange(int(seconds * rate)) / rate
    rows = []
    for _ in range(n):
        f0 = rng.uniform(90, 250) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.5, 3) * t))
        phase = 2 * np.pi * np.cumsum(f0) / rate
        wave = sum(rng.uniform(0.2, 1.0) / k * np.sin(k * phase) for k in range(1, 25))
        wave = wave * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(2, 6) * t) ** 2)
        wave = wave + rng.normal(0, rng.uniform(0.01, 0.1), len(t))
        rows.append(0.1 * wave / np.abs(wave).max())
    return torch.tensor(np.stack(rows), dtype=torch.float32)


@torch.no_grad()
def _calibrate_batchnorm(model, seed: int, rate: int) -> None:
    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the calibration passes
    model.train()
    rng = np.random.default_rng(seed)
    for _ in range(3):
        model(speech=_synthetic_audio(rng, 8, 2.0, rate), extract_embd=True)
    for bn in bns:
        bn.momentum = 0.1
    model.eval()


def build(dest_dir, encoder: str = "rawnet3", seed: int = 0, small: bool = True) -> Path:
    """Writes ``config.yaml`` and ``model.pth`` of a random ``encoder`` model into ``dest_dir``."""
    from espnet2.tasks.spk import SpeakerTask
    from espnet2.torch_utils.set_all_random_seed import set_all_random_seed
    from espnet2.utils.yaml_no_alias_safe_dump import yaml_no_alias_safe_dump

    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        recipe_conf = Path(tmp) / f"train_{encoder}.yaml"
        recipe_conf.write_text(yaml.safe_dump(_config(encoder, small), sort_keys=False))
        # spk.sh passes --spk_num (the number of lines of spk2utt) and --output_dir.
        args = SpeakerTask.get_parser().parse_args(
            ["--config", str(recipe_conf), "--output_dir", str(dest),
             "--spk_num", str(SPK_NUM), "--seed", str(seed)])
    SpeakerTask.check_required_command_args(args)
    import espnet

    args.version = espnet.__version__  # as AbsTask.main sets it
    set_all_random_seed(seed)
    model = SpeakerTask.build_model(args)
    _calibrate_batchnorm(model, seed, args.preprocessor_conf["sample_rate"])
    with open(dest / "config.yaml", "w", encoding="utf-8") as f:
        yaml_no_alias_safe_dump(vars(args), f, indent=4, sort_keys=False)
    torch.save(model.state_dict(), dest / "model.pth")
    return dest


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    print(build(sys.argv[1], *sys.argv[2:]))
