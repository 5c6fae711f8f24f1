#!/usr/bin/env python3
"""What a user runs without speechdump: one utterance at a time, the way ESPnet's sequential
``extract_spk_embed.py`` does it, at torch's default thread count (one per core).

For each line of wav.scp: decode (soundfile), mix to mono, resample to the model's rate
(torchaudio's sinc), run the model on that utterance alone (Resemblyzer: ``preprocess_wav`` and
``embed_utterance``; Whisper: its feature extractor's 30 s log-mel, the encoder's hidden state
trimmed to the frames that hold audio), write the result with kaldiio's
WriteHelper (ark + scp). A thread decodes the next utterances while the model runs, as
ESPnet's data loader does. The model load is timed apart from the loop.

    plain_loop.py speechbrain <model_dir> <wav.scp> <out_stem>
    plain_loop.py ssl <model_dir> <wav.scp> <out_stem> --layer 6
    plain_loop.py resemblyzer - <wav.scp> <out_stem>
    plain_loop.py whisper <model_dir> <wav.scp> <out_stem> --layer 6

Prints ``model_load_s`` and ``loop_s`` (first decode to last write) on its last line.
"""

import argparse
import queue
import threading
import time

import kaldiio
import numpy as np
import soundfile
import torch
import torchaudio

RATE = 16000


def decoded(wav_scp: str, ahead: int = 4):
    """(utt id, 16 kHz mono float32 tensor) of each wav.scp line, decoded on a thread ahead."""
    items: queue.Queue = queue.Queue(ahead)

    def decode():
        with open(wav_scp, encoding="utf-8") as f:
            for line in f:
                utt, path = line.split(maxsplit=1)
                samples, rate = soundfile.read(path.strip(), dtype="float32", always_2d=True)
                wave = torch.from_numpy(samples.mean(axis=1))
                if rate != RATE:
                    wave = torchaudio.functional.resample(wave, rate, RATE)
                items.put((utt, wave))
        items.put(None)

    threading.Thread(target=decode, daemon=True).start()
    while (item := items.get()) is not None:
        yield item


def speechbrain_model(model: str, _args):
    from speechbrain.inference.speaker import EncoderClassifier

    classifier = EncoderClassifier.from_hparams(source=model, savedir=None)
    return lambda wave: classifier.encode_batch(wave[None]).squeeze().numpy()


def ssl_model(model: str, args):
    from transformers import AutoFeatureExtractor, AutoModel

    extractor = AutoFeatureExtractor.from_pretrained(model)
    encoder = AutoModel.from_pretrained(model).eval()

    def layer(wave):
        values = extractor(wave.numpy(), sampling_rate=RATE, return_tensors="pt").input_values
        return encoder(values, output_hidden_states=True).hidden_states[args.layer][0].numpy()
    return layer


def resemblyzer_model(_model: str, _args):
    from resemblyzer import VoiceEncoder, preprocess_wav

    encoder = VoiceEncoder("cpu", verbose=False)
    return lambda wave: encoder.embed_utterance(preprocess_wav(wave.numpy(), source_sr=RATE))


def whisper_model(model: str, args):
    from transformers import WhisperFeatureExtractor, WhisperModel

    extractor = WhisperFeatureExtractor.from_pretrained(model)
    encoder = WhisperModel.from_pretrained(model).get_encoder().eval()

    def layer(wave):
        features = extractor(wave.numpy(), sampling_rate=RATE, return_tensors="pt").input_features
        frames = -(-len(wave) // 320)  # the 20 ms frames that hold audio
        return encoder(features, output_hidden_states=True).hidden_states[args.layer][0, :frames]
    return layer


MODELS = {"speechbrain": speechbrain_model, "ssl": ssl_model, "resemblyzer": resemblyzer_model,
          "whisper": whisper_model}


def main():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("toolkit", choices=sorted(MODELS))
    p.add_argument("model")
    p.add_argument("wav_scp")
    p.add_argument("out_stem")
    p.add_argument("--layer", type=int, default=6)
    args = p.parse_args()
    start = time.perf_counter()
    run = MODELS[args.toolkit](args.model, args)
    loaded = time.perf_counter()
    utts = 0
    with torch.inference_mode(), kaldiio.WriteHelper(
            f"ark,scp:{args.out_stem}.ark,{args.out_stem}.scp") as writer:
        for utt, wave in decoded(args.wav_scp):
            writer(utt, np.ascontiguousarray(run(wave), dtype=np.float32))
            utts += 1
    end = time.perf_counter()
    print(f"utterances {utts} threads {torch.get_num_threads()} model_load_s "
          f"{loaded - start:.2f} loop_s {end - loaded:.2f}")


if __name__ == "__main__":
    main()
