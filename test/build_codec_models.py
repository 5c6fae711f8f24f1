"""Random-init neural audio codecs in the transformers layout, built offline.

``build(dest, kind)`` writes what ``AutoModel.from_pretrained(dest)`` and
``AutoFeatureExtractor.from_pretrained(dest)`` load: the real architecture (``EncodecModel``,
``DacModel``, ``MimiModel``, ``XcodecModel``) from its transformers config class, seeded random
weights, and the feature-extractor config the hub models ship (``EncodecFeatureExtractor`` at
24 kHz for EnCodec and Mimi, ``DacFeatureExtractor`` at 16 kHz padding to a multiple of the hop
for DAC and X-Codec).

Sizes are tiny (a few hundred thousand parameters) but the strides, and so the sample rates,
frame rates and frame-count formulas, are the real ones: EnCodec 24 kHz (hop 320, 75 Hz,
codebooks of 1024 so that the bandwidths give the real codebook counts: 1.5 kbps = 2, 6 kbps =
8), DAC 16 kHz (hop 320, 50 Hz, 12 codebooks), Mimi (hop 1920, 12.5 Hz, 8 codebooks, the first
semantic), X-Codec (16 kHz, hop 320, 50 Hz; its semantic HuBERT with the real feature-encoder
convolutions, 400 samples wide at stride 320, but 2 layers of width 32; codebooks of 1024 and
the hub's target_bandwidths, so 0.5, 1, 1.5, 2, 4 kbps = 1, 2, 3, 4, 8 codebooks). Nothing
downloads.
"""

from pathlib import Path

import torch

KINDS = ("encodec", "dac", "mimi", "xcodec")
# Spread of the random codebooks: about that of the encoder's latents for speech-level input, so
# that the nearest code varies with the audio (DAC compares L2-normalised vectors: any scale).
CODEBOOK_SCALE = {"encodec": 0.002, "dac": 1.0, "mimi": 1.0, "xcodec": 1.0}


def _model_and_extractor(kind: str):
    from transformers import (DacConfig, DacFeatureExtractor, DacModel, EncodecConfig,
                              EncodecFeatureExtractor, EncodecModel, HubertConfig, MimiConfig,
                              MimiModel, XcodecConfig, XcodecModel)

    if kind == "encodec":
        config = EncodecConfig(num_filters=8, hidden_size=32, codebook_size=1024,
                               codebook_dim=32, upsampling_ratios=[8, 5, 4, 2],
                               target_bandwidths=[1.5, 3.0, 6.0, 12.0], sampling_rate=24000,
                               num_lstm_layers=1)
        return EncodecModel(config), EncodecFeatureExtractor(feature_size=1, sampling_rate=24000,
                                                             padding_value=0.0)
    if kind == "dac":
        config = DacConfig(encoder_hidden_size=8, downsampling_ratios=[2, 4, 5, 8],
                           decoder_hidden_size=64, n_codebooks=12, codebook_size=1024,
                           codebook_dim=8, hidden_size=64, sampling_rate=16000)
        return DacModel(config), DacFeatureExtractor(feature_size=1, sampling_rate=16000,
                                                     padding_value=0.0, hop_length=320)
    if kind == "mimi":
        config = MimiConfig(hidden_size=32, num_filters=8, num_hidden_layers=2,
                            num_attention_heads=2, num_key_value_heads=2, head_dim=16,
                            intermediate_size=64, codebook_size=256, codebook_dim=32,
                            vector_quantization_hidden_dimension=32, num_quantizers=8,
                            num_semantic_quantizers=1, upsample_groups=32, sliding_window=50)
        return MimiModel(config), EncodecFeatureExtractor(feature_size=1, sampling_rate=24000,
                                                          padding_value=0.0)
    if kind == "xcodec":
        semantic = HubertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=64, conv_dim=(16,) * 7,
                                num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
        acoustic = DacConfig(encoder_hidden_size=8, downsampling_ratios=[8, 5, 4, 2],
                             decoder_hidden_size=32, upsampling_ratios=[8, 5, 4, 2],
                             hidden_size=32, n_codebooks=1, codebook_dim=8)
        config = XcodecConfig(acoustic_model_config=acoustic.to_dict(),
                              semantic_model_config=semantic.to_dict(), codebook_size=1024,
                              target_bandwidths=[0.5, 1, 1.5, 2, 4], sample_rate=16000)
        return XcodecModel(config), DacFeatureExtractor(feature_size=1, sampling_rate=16000,
                                                        padding_value=0.0, hop_length=320)
    raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")


def _fit_encodec_codebooks(model, generator: torch.Generator) -> None:
    """EnCodec compares raw distances: its random latents sit around an offset that N(0, s)
    codebooks never reach (one code wins everywhere). Codebook k is set to latent frames of
    amplitude-modulated noise, centred and shrunk by 2^-k after the first, as residuals are."""
    steps = torch.linspace(0, 20, 48000)
    audio = 0.1 * torch.sin(steps) ** 2 * torch.randn(48000, generator=generator)
    with torch.no_grad():
        latents = model.encoder(audio.view(1, 1, -1))[0].T  # [frames, dim]
        centred = latents - latents.mean(0)
        for k, layer in enumerate(model.quantizer.layers):
            embed = layer.codebook.embed
            picks = torch.randint(len(latents), (embed.shape[0],), generator=generator)
            embed.copy_(latents[picks] if k == 0 else centred[picks] / 2 ** k)


def build(dest, kind: str = "encodec", seed: int = 0) -> Path:
    """Writes the codec and its feature extractor to ``dest``; returns ``dest``.

    The codebooks are drawn from N(0, CODEBOOK_SCALE^2) (not left at transformers' init, where
    many entries coincide) so that every code is distinct and the tokens follow the audio."""
    dest = Path(dest)
    torch.manual_seed(seed)
    model, extractor = _model_and_extractor(kind)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith(("codebook.embed", "codebook.embed_sum", "codebook.weight")):
                noise = torch.randn(tensor.shape, generator=generator)
                tensor.copy_(CODEBOOK_SCALE[kind] * noise)
            elif name.endswith("codebook.cluster_usage"):
                tensor.fill_(1.0)
    if kind == "encodec":
        _fit_encodec_codebooks(model, generator)
    model.eval()
    model.save_pretrained(dest)
    extractor.save_pretrained(dest)
    return dest


if __name__ == "__main__":
    import sys

    build(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "encodec")
