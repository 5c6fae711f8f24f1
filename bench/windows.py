#!/usr/bin/env python3
"""Windows over long audio (speechdump.windows): three measurements, each its own ``--part``.

* ``causal``: causal fine-stride windows (``--causal true --pool last``) through the engine
  (``engine.run``: loader thread, the extractor's ``forward``, which runs the windows in
  length-sorted batches of at most ``WINDOW_BATCH_SECONDS``), against one forward pass per
  window, the way brain-encoding packages run them: for each stamp t, the feature extractor and
  ``model(audio[t - W:t], output_hidden_states=True)``, then the last frame. Same model (a
  random-init HuBERT of test/build_ssl_model.py, base size unless ``--small``), same torch
  threads, same recording (real speech: the sample recordings concatenated to
  ``--causal_seconds``); the two are alternated ``--rounds`` times in one process and the
  outputs compared.
* ``memory``: peak RSS of a recording of ``--memory_seconds`` (comma-separated: each in a
  process of its own) through ``engine.run`` with causal windows of W = 16 s every H = 0.1 s,
  against the RSS before the run (model loaded; peak counter reset through
  ``/proc/self/clear_refs``). The model is a micro HuBERT (one 8-channel convolution of kernel
  400 and stride 320, i.e. the real frame rate and receptive field; 16 hidden, 1 layer), so
  that 6000 windows of 16 s (96000 s of window audio) run on a 2-core CPU in minutes: the
  memory in question is the windows' audio and the passes, not the weights.
* ``stitch``: ``--pool none`` with ``--window_seconds 20 --hop_seconds 15`` (stitched frames)
  against one whole-utterance forward on a 60 s recording (the sample recordings concatenated),
  small random-init HuBERTs (group norm: the base layout; layer norm: the large layout), every
  hidden state: max and mean abs difference.

    tools/venv/bin/python bench/windows.py [--part causal,memory,stitch]
"""

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "test"))  # random-init model builders shared with the tests
sys.path.insert(0, str(REPO))

from build_ssl_model import build  # noqa: E402
from speechdump import engine  # noqa: E402
from speechdump.audio import ResamplerCache, load_audio  # noqa: E402
from speechdump.data import Utterance, read_table  # noqa: E402
from speechdump.extractors import load_extractor  # noqa: E402

SAMPLES = REPO / "samples" / "real_speech"
RATE = 16000


def speech(seconds: float) -> np.ndarray:
    """The sample recordings (16 kHz, as speechdump decodes them) concatenated, tiled and cut to
    ``seconds``."""
    cache = ResamplerCache()
    waves = [load_audio(Utterance(utt, str(SAMPLES / path)), RATE, cache)
             for utt, path in sorted(read_table(SAMPLES / "wav.scp").items())]
    whole = np.concatenate(waves)
    reps = int(np.ceil(seconds * RATE / len(whole)))
    return np.tile(whole, reps)[:int(round(seconds * RATE))].astype(np.float32)


def write_wav(path: Path, wave: np.ndarray) -> Utterance:
    soundfile.write(path, wave, RATE, subtype="FLOAT")
    return Utterance(path.stem, str(path))


def run_engine(extractor, utt: Utterance) -> dict:
    out = {}
    engine.run([utt], extractor, out.__setitem__, engine.EngineOptions(progress=False))
    return out[utt.utt_id]


# -- causal: batched against one forward per window ---------------------------------------------

def causal(args, tmp: Path) -> None:
    from transformers import AutoFeatureExtractor, AutoModel

    path = str(build(tmp / "hubert", "hubert", "group", small=args.small))
    wave = speech(args.causal_seconds)
    utt = write_wav(tmp / "causal.wav", wave)
    layer = args.layer
    extractor = load_extractor("ssl", path, layers=str(layer), pool="last",
                               window_seconds=args.W, hop_seconds=args.H, causal=True)
    net, fe = AutoModel.from_pretrained(path).eval(), AutoFeatureExtractor.from_pretrained(path)
    # The same transformer layers as the extractor runs (it drops those after layer + 1), so
    # only batching differs.
    net.encoder.layers = torch.nn.ModuleList(list(net.encoder.layers)[:layer + 1])

    def per_window():
        audio = load_audio(utt, RATE, ResamplerCache())
        hop, window = int(round(args.H * RATE)), int(round(args.W * RATE))
        stamps = list(range(hop, len(audio) + 1, hop))
        if stamps[-1] < len(audio):
            stamps.append(len(audio))
        out = []
        with torch.inference_mode():
            for t in stamps:
                inputs = fe(audio[max(0, t - window):t], sampling_rate=RATE, return_tensors="pt")
                hidden = net(**inputs, output_hidden_states=True).hidden_states
                out.append(hidden[layer][0, -1].numpy())
        return np.stack(out)

    def batched():
        return run_engine(extractor, utt)[f"layer{layer}"]

    per_window()  # warm-up, both
    batched()
    walls = {"per window": [], "batched": []}
    results = {}
    for _ in range(args.rounds):
        for name, fn in (("per window", per_window), ("batched", batched)):
            start = time.perf_counter()
            results[name] = fn()
            walls[name].append(time.perf_counter() - start)
    diff = float(np.abs(results["per window"] - results["batched"]).max())
    count = len(results["batched"])
    size = "base size (768 hidden, 12 layers)" if not args.small else "small (96 hidden, 4 layers)"
    print(f"causal: HuBERT {size}, group norm, layer {layer}, {args.causal_seconds:g} s of real "
          f"speech, W = {args.W:g} s, H = {args.H:g} s: {count} windows; torch threads "
          f"{torch.get_num_threads()}; {args.rounds} rounds alternated")
    for name, values in walls.items():
        print(f"  {name:<10}: " + ", ".join(f"{v:.1f}" for v in values) +
              f" s (best {min(values):.1f} s, {count / min(values):.1f} windows/s)")
    print(f"  speed-up batched / per window: {min(walls['per window']) / min(walls['batched']):.2f}"
          f"x (best of each); max abs difference {diff:.1e}")


# -- memory: peak RSS of a long recording -------------------------------------------------------

def micro_model(dest: Path) -> str:
    from transformers import HubertConfig, HubertModel, Wav2Vec2FeatureExtractor

    config = HubertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=32, conv_dim=(8,), conv_stride=(320,),
                          conv_kernel=(400,), conv_bias=False, feat_extract_norm="group",
                          num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
    torch.manual_seed(0)
    HubertModel(config).eval().save_pretrained(dest)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=RATE, padding_value=0.0,
                             do_normalize=True, return_attention_mask=False).save_pretrained(dest)
    return str(dest)


def status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def memory_child(seconds: float, model: str, tmp: Path) -> None:
    """One recording through the engine, in this process: prints RSS before and peak."""
    utt = write_wav(tmp / f"memory{seconds:g}.wav", speech(seconds))
    extractor = load_extractor("ssl", model, layers="all", pool="last", window_seconds=16,
                               hop_seconds=0.1, causal=True)
    run_engine(extractor, write_wav(tmp / "warm.wav", speech(20)))  # warm-up: allocator, threads
    before = status_kb("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM (the peak) to the current RSS
        peak_field = "VmHWM"
    except OSError:
        peak_field = None
    start = time.perf_counter()
    out = run_engine(extractor, utt)
    wall = time.perf_counter() - start
    peak = status_kb(peak_field) if peak_field else resource.getrusage(
        resource.RUSAGE_SELF).ru_maxrss
    windows = len(out["times"])
    print(f"  {seconds:>5g} s: {windows} windows ({windows * 16:,} s of window audio), "
          f"{wall:.0f} s wall; RSS before {before / 1024:.0f} MB, peak {peak / 1024:.0f} MB "
          f"(+{(peak - before) / 1024:.0f} MB; the decoded recording alone is "
          f"{seconds * RATE * 4 / 2 ** 20:.0f} MB)", flush=True)


def memory(args, tmp: Path) -> None:
    model = micro_model(tmp / "micro")
    print(f"memory: micro HuBERT (1 conv 8 ch k400 s320, 16 hidden, 1 layer), causal W = 16 s, "
          f"H = 0.1 s, pool last, all layers, real speech tiled; torch threads "
          f"{torch.get_num_threads()}; each length in a process of its own", flush=True)
    for seconds in args.memory_seconds:
        subprocess.run([sys.executable, __file__, "--memory_child", str(seconds),
                        "--model", model, "--tmp", str(tmp)], check=True)


# -- stitch: stitched frames against the whole forward ------------------------------------------

def stitch(args, tmp: Path) -> None:
    wave = speech(60)
    for norm in ("group", "layer"):
        path = str(build(tmp / f"hubert-{norm}", "hubert", norm))
        whole = load_extractor("ssl", path)
        stitched = load_extractor("ssl", path, window_seconds=20, hop_seconds=15)
        a = whole.forward([whole.prepare(wave)])[0]
        b = stitched.forward([stitched.prepare(wave)])[0]
        print(f"stitch: small HuBERT ({norm} norm), 60 s of real speech, {len(a['layer0'])} "
              f"frames; W = 20 s, H = 15 s ({len(stitched.prepare(wave))} windows) against one "
              f"whole forward")
        for name in sorted(a):
            assert a[name].shape == b[name].shape
            d = np.abs(a[name] - b[name])
            print(f"  {name}: max abs {d.max():.2e}, mean abs {d.mean():.2e} (values: mean abs "
                  f"{np.abs(a[name]).mean():.2e})")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--part", default="causal,memory,stitch")
    p.add_argument("--small", action="store_true", help="causal: the small HuBERT, not base size")
    p.add_argument("--causal_seconds", type=float, default=20.0)
    p.add_argument("--W", type=float, default=2.0)
    p.add_argument("--H", type=float, default=0.25)
    p.add_argument("--layer", type=int, default=6)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--memory_seconds", type=lambda s: [float(x) for x in s.split(",")],
                   default=[300.0, 600.0])
    p.add_argument("--memory_child", type=float, help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--tmp", help=argparse.SUPPRESS)
    args = p.parse_args()
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    if args.memory_child is not None:
        memory_child(args.memory_child, args.model, Path(args.tmp))
        return
    with tempfile.TemporaryDirectory() as tmp:
        for part in args.part.split(","):
            {"causal": causal, "memory": memory, "stitch": stitch}[part](args, Path(tmp))


if __name__ == "__main__":
    main()
