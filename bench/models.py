"""The models the benches run, at real size (or the tests' small ones), built offline with
random weights in each toolkit's own layout: name -> (toolkit, options) and ``build``."""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "test"))  # random-init model builders shared with the tests

# name -> (toolkit, options)
MODELS = {
    "resemblyzer": ("resemblyzer", {}),
    "ecapa": ("speechbrain", {}),
    "hubert-layer6": ("ssl", {"layers": "6"}),
    "hubert-all": ("ssl", {}),
    "whisper-base": ("whisper", {"layers": "all"}),
    "whisper-base-last": ("whisper", {"layers": "6"}),
    "encodec": ("codec", {"bandwidth": "6.0"}),
    "fbank": ("fbank", {}),
}


def build(name: str, dest: Path, small: bool = False):
    """The model directory of ``name`` (real size, or the tests' small one with ``small``);
    None for a toolkit that needs none."""
    if name in ("resemblyzer", "fbank"):
        return None  # Resemblyzer's pretrained encoder ships in its wheel
    if name == "ecapa":
        from build_speechbrain_model import build as build_speechbrain

        channels = [64, 64, 64, 64, 192] if small else [1024, 1024, 1024, 1024, 3072]
        return build_speechbrain(dest, kind="ecapa", channels=channels)
    if name.startswith("hubert"):
        from build_ssl_model import build as build_ssl

        return build_ssl(dest, kind="hubert", norm="group", small=small)
    if name.startswith("whisper-base"):
        if small:
            from build_hf_models import build_whisper

            return build_whisper(dest)
        from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

        config = WhisperConfig(num_mel_bins=80, d_model=512, encoder_layers=6,
                               encoder_attention_heads=8, encoder_ffn_dim=2048,
                               decoder_layers=1, decoder_attention_heads=8, decoder_ffn_dim=2048,
                               max_source_positions=1500)
        WhisperModel(config).save_pretrained(dest)
        WhisperFeatureExtractor(feature_size=80, sampling_rate=16000, hop_length=160,
                                chunk_length=30, n_fft=400).save_pretrained(dest)
        return dest
    if small:
        from build_codec_models import build as build_codec

        return build_codec(dest, "encodec")
    from transformers import EncodecConfig, EncodecFeatureExtractor, EncodecModel

    EncodecModel(EncodecConfig()).save_pretrained(dest)  # encodec_24khz's architecture
    EncodecFeatureExtractor(feature_size=1, sampling_rate=24000).save_pretrained(dest)
    return dest
