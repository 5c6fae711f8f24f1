"""Random-init SpeechBrain speaker encoders in SpeechBrain's pretrained layout, built offline.

``build(dest, kind)`` writes what ``EncoderClassifier.from_hparams(source=dest)`` loads: a
``hyperparams.yaml`` shaped like speechbrain/spkrec-ecapa-voxceleb (``kind="ecapa"``) or
spkrec-xvect-voxceleb (``kind="xvector"``), with the real classes (Fbank, sentence-level
InputNormalization, ECAPA_TDNN or Xvector, a classifier with its label encoder, a global
InputNormalization of the embeddings), and a ``pretrainer`` whose loadables point at the
checkpoint files saved next to it (the embedding normaliser's statistics included). Weights
are random (seeded); the batch norms and the embedding normaliser are calibrated on seeded
synthetic signals, so activations have realistic scales rather than untrained identity
statistics. Nothing downloads.
"""

from pathlib import Path
from typing import Optional, Sequence

import torch

ECAPA_YAML = """\
# Random-init ECAPA-TDNN laid out as speechbrain/spkrec-ecapa-voxceleb (speechdump tests)
pretrained_path: {dest}
sample_rate: {sample_rate}
n_mels: {n_mels}
emb_dim: {lin_neurons}

compute_features: !new:speechbrain.lobes.features.Fbank
    sample_rate: !ref <sample_rate>
    n_mels: !ref <n_mels>

mean_var_norm: !new:speechbrain.processing.features.InputNormalization
    norm_type: sentence
    std_norm: False

embedding_model: !new:speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN
    input_size: !ref <n_mels>
    channels: {channels}
    kernel_sizes: [5, 3, 3, 3, 1]
    dilations: [1, 2, 3, 4, 1]
    attention_channels: {attention_channels}
    se_channels: {se_channels}
    lin_neurons: !ref <emb_dim>

classifier: !new:speechbrain.lobes.models.ECAPA_TDNN.Classifier
    input_size: !ref <emb_dim>
    out_neurons: {out_neurons}
"""

XVECTOR_YAML = """\
# Random-init x-vector laid out as speechbrain/spkrec-xvect-voxceleb (speechdump tests)
pretrained_path: {dest}
sample_rate: {sample_rate}
n_mels: {n_mels}
emb_dim: {lin_neurons}

compute_features: !new:speechbrain.lobes.features.Fbank
    sample_rate: !ref <sample_rate>
    n_mels: !ref <n_mels>

mean_var_norm: !new:speechbrain.processing.features.InputNormalization
    norm_type: sentence
    std_norm: False

embedding_model: !new:speechbrain.lobes.models.Xvector.Xvector
    in_channels: !ref <n_mels>
    activation: !name:torch.nn.LeakyReLU
    tdnn_blocks: 5
    tdnn_channels: {channels}
    tdnn_kernel_sizes: [5, 3, 3, 1, 1]
    tdnn_dilations: [1, 2, 3, 1, 1]
    lin_neurons: !ref <emb_dim>

classifier: !new:speechbrain.lobes.models.Xvector.Classifier
    input_shape: [null, null, !ref <emb_dim>]
    activation: !name:torch.nn.LeakyReLU
    lin_blocks: 1
    lin_neurons: !ref <emb_dim>
    out_neurons: {out_neurons}
"""

COMMON_YAML = """
mean_var_norm_emb: !new:speechbrain.processing.features.InputNormalization
    norm_type: global
    std_norm: False

modules:
    compute_features: !ref <compute_features>
    mean_var_norm: !ref <mean_var_norm>
    embedding_model: !ref <embedding_model>
    mean_var_norm_emb: !ref <mean_var_norm_emb>
{classifier_module}
label_encoder: !new:speechbrain.dataio.encoder.CategoricalEncoder

pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        embedding_model: !ref <embedding_model>
        mean_var_norm_emb: !ref <mean_var_norm_emb>
{classifier_loadable}    paths:
        embedding_model: !ref <pretrained_path>/embedding_model.ckpt
        mean_var_norm_emb: !ref <pretrained_path>/mean_var_norm_emb.ckpt
{classifier_path}"""

# The real models' sizes, but for channels (small by default: tests build these).
DEFAULTS = {
    "ecapa": dict(channels=[64, 64, 64, 64, 192], n_mels=80, lin_neurons=192),
    "xvector": dict(channels=[64, 64, 64, 64, 150], n_mels=24, lin_neurons=512),
}


def _synthetic_waves(n: int, seconds: float, sample_rate: int, generator: torch.Generator):
    """Seeded speech-like signals: harmonics of a wandering pitch, syllabic envelopes, noise."""
    t = torch.arange(int(seconds * sample_rate)) / sample_rate
    waves = []
    for _ in range(n):
        f0, offset, rate = torch.rand(3, generator=generator)
        pitch = (90 + 160 * f0) * (1 + 0.1 * torch.sin(2 * torch.pi * 0.7 * t + 6 * offset))
        phase = 2 * torch.pi * torch.cumsum(pitch, 0) / sample_rate
        voiced = sum(torch.sin(h * phase) / h for h in range(1, 12))
        envelope = torch.relu(torch.sin(2 * torch.pi * (3 + 3 * rate) * t))
        noise = torch.randn(t.shape, generator=generator)
        waves.append(0.1 * envelope * voiced + 0.01 * noise)
    return torch.stack(waves)


def _calibrate(modules, sample_rate: int, generator: torch.Generator):
    """Sets every batch norm's running statistics, and the embedding normaliser's global
    statistics, from the model's own activations on synthetic signals (train-mode passes)."""
    norms = [m for m in modules["embedding_model"].modules()
             if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the calibration batches
    modules["embedding_model"].train()
    modules["mean_var_norm_emb"].train()
    with torch.no_grad():
        for _ in range(2):
            wavs = _synthetic_waves(4, 2.0, sample_rate, generator)
            lens = torch.ones(len(wavs))
            feats = modules["mean_var_norm"](modules["compute_features"](wavs), lens)
            embeddings = modules["embedding_model"](feats, lens)
            modules["mean_var_norm_emb"](embeddings, lens)
    for bn in norms:
        bn.momentum = 0.1
    for module in modules.values():
        module.eval()


def build(dest_dir, kind: str = "ecapa", channels: Optional[Sequence[int]] = None, seed: int = 0,
          lin_neurons: Optional[int] = None, n_mels: Optional[int] = None,
          attention_channels: int = 128, se_channels: int = 128, out_neurons: int = 10,
          classifier: bool = True, sample_rate: int = 16000) -> Path:
    """Writes a random-init model of the real architecture to ``dest_dir``; returns ``dest_dir``.

    ``channels``: ECAPA's five block widths (full size: [1024, 1024, 1024, 1024, 3072]; the
    first four must be divisible by the Res2Net scale, 8) or the x-vector's five TDNN widths
    (full size: [512, 512, 512, 512, 1500]). Other sizes default to the real models'.
    """
    from hyperpyyaml import load_hyperpyyaml

    if kind not in DEFAULTS:
        raise ValueError(f"kind must be one of {sorted(DEFAULTS)}, not {kind!r}")
    defaults = DEFAULTS[kind]
    channels = list(channels or defaults["channels"])
    dest = Path(dest_dir).absolute()
    dest.mkdir(parents=True, exist_ok=True)

    template = ECAPA_YAML if kind == "ecapa" else XVECTOR_YAML
    text = template.format(
        dest=dest, sample_rate=sample_rate, n_mels=n_mels or defaults["n_mels"],
        lin_neurons=lin_neurons or defaults["lin_neurons"], channels=channels,
        attention_channels=attention_channels, se_channels=se_channels, out_neurons=out_neurons)
    text += COMMON_YAML.format(
        classifier_module="    classifier: !ref <classifier>\n" if classifier else "",
        classifier_loadable="        classifier: !ref <classifier>\n"
        "        label_encoder: !ref <label_encoder>\n" if classifier else "",
        classifier_path="        classifier: !ref <pretrained_path>/classifier.ckpt\n"
        "        label_encoder: !ref <pretrained_path>/label_encoder.txt\n" if classifier else "")

    torch.manual_seed(seed)  # the random init of every module the yaml builds
    hparams = load_hyperpyyaml(text)
    _calibrate(hparams["modules"], sample_rate, torch.Generator().manual_seed(seed))

    torch.save(hparams["embedding_model"].state_dict(), dest / "embedding_model.ckpt")
    hparams["mean_var_norm_emb"]._save(dest / "mean_var_norm_emb.ckpt")
    if classifier:
        torch.save(hparams["classifier"].state_dict(), dest / "classifier.ckpt")
        hparams["label_encoder"].update_from_iterable([f"spk{i}" for i in range(out_neurons)])
        hparams["label_encoder"].save(dest / "label_encoder.txt")
    (dest / "hyperparams.yaml").write_text(text, encoding="utf-8")
    return dest_dir
