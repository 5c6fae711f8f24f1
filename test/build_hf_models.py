"""Random-init Whisper, w2v-BERT 2.0 and x-vector models in the transformers layout, offline.

Each ``build_*(dest)`` writes what the extractors load with ``from_pretrained(dest)`` (the
model's ``config.json`` and weights, and its feature extractor's ``preprocessor_config.json``):
the real architecture from its transformers config class at small widths, keeping what fixes
frame counts and context (Whisper's 80 mel bins, 30 s input and conv strides; w2v-BERT's stacked
160-dim fbank input and causal depthwise convolution; the x-vector heads' TDNN kernels and
dilations on the real 20 ms convolutional front end).

Weights: transformers' own initialisation with a larger spread, and every norm's scale and
shift drawn around 1 and 0, so that a mistake in lengths, padding or normalisation shows in the
outputs instead of being washed out by near-identity layers. Nothing downloads.
"""

from pathlib import Path

import torch

from build_ssl_model import _config as ssl_config
from build_ssl_model import perturb_norms

XVECTOR_KINDS = ("wavlm", "unispeech-sat", "wav2vec2")


def build_whisper(dest, seed: int = 0) -> Path:
    """A 3-layer ``WhisperModel`` (encoder and a 1-layer decoder) and its
    ``WhisperFeatureExtractor`` (80 mel bins, 30 s, hop 160)."""
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    config = WhisperConfig(vocab_size=64, num_mel_bins=80, d_model=64, encoder_layers=3,
                           encoder_attention_heads=4, encoder_ffn_dim=128, decoder_layers=1,
                           decoder_attention_heads=4, decoder_ffn_dim=128,
                           max_source_positions=1500, max_target_positions=32, pad_token_id=0,
                           bos_token_id=1, eos_token_id=1, decoder_start_token_id=1,
                           init_std=0.1, suppress_tokens=[], begin_suppress_tokens=[])
    torch.manual_seed(seed)
    model = WhisperModel(config).eval()
    perturb_norms(model, seed + 1)
    model.save_pretrained(dest)
    WhisperFeatureExtractor(feature_size=80, sampling_rate=16000, hop_length=160,
                            chunk_length=30, n_fft=400).save_pretrained(dest)
    return Path(dest)


def build_w2v_bert(dest, seed: int = 0) -> Path:
    """A 3-layer ``Wav2Vec2BertModel`` in the layout of facebook/w2v-bert-2.0 (relative-key
    positions 64 left / 8 right, depthwise kernel 31, no adapter) and its
    ``SeamlessM4TFeatureExtractor`` (80 mel bins, stride 2)."""
    from transformers import (SeamlessM4TFeatureExtractor, Wav2Vec2BertConfig,
                              Wav2Vec2BertModel)

    config = Wav2Vec2BertConfig(hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                                intermediate_size=128, feature_projection_input_dim=160,
                                conv_depthwise_kernel_size=31,
                                position_embeddings_type="relative_key",
                                left_max_position_embeddings=64, right_max_position_embeddings=8,
                                add_adapter=False, initializer_range=0.1)
    torch.manual_seed(seed)
    model = Wav2Vec2BertModel(config).eval()
    perturb_norms(model, seed + 1)
    model.save_pretrained(dest)
    SeamlessM4TFeatureExtractor(feature_size=80, num_mel_bins=80, sampling_rate=16000, stride=2,
                                padding_value=1.0).save_pretrained(dest)
    return Path(dest)


def build_xvector(dest, kind: str = "wavlm", norm: str = "group", seed: int = 0) -> Path:
    """``WavLMForXVector`` / ``UniSpeechSatForXVector`` / ``Wav2Vec2ForXVector`` on the small
    encoder of build_ssl_model (real conv strides), with the TDNN of microsoft/wavlm-base-plus-sv
    at small widths, a weighted layer sum, and a ``Wav2Vec2FeatureExtractor``."""
    from transformers import (UniSpeechSatConfig, UniSpeechSatForXVector, Wav2Vec2Config,
                              Wav2Vec2FeatureExtractor, Wav2Vec2ForXVector, WavLMConfig,
                              WavLMForXVector)

    if kind not in XVECTOR_KINDS:
        raise ValueError(f"kind must be one of {', '.join(XVECTOR_KINDS)}, not {kind!r}")
    base = ssl_config("wav2vec2" if kind == "unispeech-sat" else kind, norm, True).to_dict()
    for key in ("model_type", "architectures", "transformers_version"):
        base.pop(key, None)
    base.update(tdnn_dim=(64, 64, 64, 64, 96), tdnn_kernel=(5, 3, 3, 1, 1),
                tdnn_dilation=(1, 2, 3, 1, 1), xvector_output_dim=32, num_labels=4,
                use_weighted_layer_sum=True)
    config_class, model_class = {
        "wavlm": (WavLMConfig, WavLMForXVector),
        "unispeech-sat": (UniSpeechSatConfig, UniSpeechSatForXVector),
        "wav2vec2": (Wav2Vec2Config, Wav2Vec2ForXVector)}[kind]
    torch.manual_seed(seed)
    model = model_class(config_class(**base)).eval()
    perturb_norms(model, seed + 1)
    model.save_pretrained(dest)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0,
                             do_normalize=True, return_attention_mask=True).save_pretrained(dest)
    return Path(dest)
