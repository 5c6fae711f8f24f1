"""Resemblyzer's GE2E speaker encoder (pretrained weights ship in its wheel: the offline default).

Batched across utterances: every utterance is cut into the fixed 1.6 s partial windows that
``VoiceEncoder.embed_utterance`` uses, the partials of a whole batch go through the LSTM in
one forward pass, and each utterance's embedding is the L2-normalised mean of its own
partials. No padding is shared between utterances, so a batch gives what each utterance alone
gives. Preprocessing is ``resemblyzer.preprocess_wav``'s: volume normalisation to -30 dBFS
(increase only) and trimming of long silences with webrtcvad.
"""

from __future__ import annotations

from typing import List, Optional

import numpy as np
import torch

from speechdump.extractors.base import Extractor

# Resemblyzer's own embed_utterance defaults.
PARTIALS_PER_SECOND = 1.3
MIN_COVERAGE = 0.75


class ResemblyzerExtractor(Extractor):
    sample_rate = 16000
    dim = 256
    # Below a few VAD windows (30 ms each) and mel frames there is nothing to embed.
    min_seconds = 0.1

    def __init__(self, model: Optional[str] = None, device: str = "cpu"):
        from resemblyzer import VoiceEncoder

        self.device = torch.device(device)
        self.encoder = VoiceEncoder(device=self.device, verbose=False, weights_fpath=model)
        self.encoder.eval()

    def prepare(self, wave: np.ndarray) -> np.ndarray:
        """Waveform at 16 kHz -> the utterance's partial mel windows ``[P, 160, 40]``."""
        from resemblyzer import VoiceEncoder, audio, hparams

        wav = audio.normalize_volume(wave, hparams.audio_norm_target_dBFS, increase_only=True)
        wav = audio.trim_long_silences(wav)
        if len(wav) == 0:
            raise ValueError("no speech left after Resemblyzer's silence trimming")
        wav_slices, mel_slices = VoiceEncoder.compute_partial_slices(
            len(wav), PARTIALS_PER_SECOND, MIN_COVERAGE)
        needed = wav_slices[-1].stop
        if needed >= len(wav):
            wav = np.pad(wav, (0, needed - len(wav)), "constant")
        mel = audio.wav_to_mel_spectrogram(wav)
        return np.stack([mel[s] for s in mel_slices])

    def cost(self, partials: np.ndarray) -> float:
        from resemblyzer import hparams

        return len(partials) * hparams.partials_n_frames * hparams.mel_window_step / 1000

    def batch_cost(self, costs) -> float:
        return sum(costs)  # partial windows are stacked, never padded

    def forward(self, batch: List[np.ndarray]) -> List[np.ndarray]:
        mels = torch.from_numpy(np.concatenate(batch)).to(self.device)
        with torch.inference_mode():
            partial_embeds = self.encoder(mels).cpu().numpy()
        bounds = np.cumsum([len(p) for p in batch])[:-1]
        embeds = []
        for partials in np.split(partial_embeds, bounds):
            raw = partials.mean(axis=0)
            embeds.append((raw / np.linalg.norm(raw, 2)).astype(np.float32))
        return embeds
