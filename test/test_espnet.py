"""Fidelity of the batched ESPnet extractors to ESPnet's own single-utterance ``Speech2Embedding``.

Small randomly initialised models of the real architectures (built by ESPnet's SpeakerTask, see
build_espnet_model.py): ECAPA-TDNN on torchaudio mel features for ``espnet`` (one whole
utterance per embedding), RawNet3 on the sinc filterbank for ``rawnet`` (multi-crop). The
reference gets the same 16 kHz waves (speechdump's loader), so only batching differs.
"""

import subprocess
import sys

import numpy as np
import pytest
import soundfile
import torch
from espnet2.bin.spk_inference import Speech2Embedding
from espnet2.train.preprocessor import SpkPreprocessor

from build_espnet_model import build
from conftest import SAMPLES, assert_equal_to_rounding, engine_outputs
from speechdump.audio import ResamplerCache, UtteranceError, load_audio
from speechdump.data import Utterance
from speechdump.extractors import load_extractor
from speechdump.extractors.espnet import RawNet3Extractor

RATE = 16000


def cosine(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def spy_batches(monkeypatch, extractor):
    """Records the size of every batch the engine gives ``extractor.forward``."""
    sizes = []
    forward = extractor.forward

    def recording(batch):
        sizes.append(len(batch))
        return forward(batch)

    monkeypatch.setattr(extractor, "forward", recording)
    return sizes


def compare(name, batched, reference):
    cosines = {u: cosine(batched[u], reference[u]) for u in reference}
    worst = min(cosines, key=cosines.get)
    diff = max(np.abs(batched[u] - reference[u]).max() for u in reference)
    scale = max(np.abs(reference[u]).max() for u in reference)
    print(f"\n{name}: {len(reference)} utterances, worst cosine {cosines[worst]:.10f} "
          f"(1 - cos = {1 - cosines[worst]:.1e}, {worst}), "
          f"max abs diff {diff:.2e} (largest |element| {scale:.3g})")
    assert cosines[worst] >= 0.9999, worst


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # The test models are tiny: one intra-op thread runs them faster than two, and is not
    # slowed ~50x when the other core is busy (OpenMP threads waiting on each other).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("espnet_models")
    return {enc: build(root / enc, enc) for enc in ("ecapa_tdnn", "rawnet3")}


@pytest.fixture(scope="module")
def espnet_by_arch(models):
    return {arch: load_extractor("espnet", str(path)) for arch, path in models.items()}


@pytest.fixture(scope="module")
def espnet(espnet_by_arch):
    return espnet_by_arch["ecapa_tdnn"]


@pytest.fixture(scope="module")
def rawnet(models):
    return load_extractor("rawnet", str(models["rawnet3"]))


def speech2embedding(model_dir):
    return Speech2Embedding(train_config=str(model_dir / "config.yaml"),
                            model_file=str(model_dir / "model.pth"))


def equal_length_segments():
    """Three 2 s segments (32000 samples each at 16 kHz) of two recordings, and one of 2.5 s."""
    ls = str(SAMPLES / "audio" / "ls-1688-142285-0006.flac")
    vctk = str(SAMPLES / "audio" / "vctk-p225-008.wav")
    return [Utterance("ls-a", ls, 0.5, 2.5), Utterance("ls-b", ls, 4.0, 6.0),
            Utterance("vctk-a", vctk, 1.0, 3.0), Utterance("vctk-long", vctk, 3.0, 5.5)]


# --- espnet: whole utterances ------------------------------------------------------------------

@pytest.fixture(scope="module")
def espnet_batched(espnet, utterances):
    return engine_outputs(espnet, utterances, 300)


def test_model_files_load_completely(models):
    # build_model_from_file loads with strict=False: check that every tensor was taken.
    for model_dir in models.values():
        saved = torch.load(model_dir / "model.pth")
        loaded = speech2embedding(model_dir).spk_model.state_dict()
        assert saved.keys() == loaded.keys()
        assert all(torch.equal(saved[k], loaded[k]) for k in saved)


@pytest.mark.kernels
@pytest.mark.parametrize("arch", ["ecapa_tdnn", "rawnet3"])
def test_espnet_matches_speech2embedding(arch, espnet_by_arch, espnet_batched, models, waves,
                                         utterances):
    batched = espnet_batched if arch == "ecapa_tdnn" else engine_outputs(
        espnet_by_arch[arch], utterances, 300)
    s2e = speech2embedding(models[arch])
    reference = {utt: s2e(wave)[0].numpy() for utt, wave in waves.items()}
    assert len(reference) == 26
    assert all(batched[u].shape == reference[u].shape == (64,) for u in reference)
    compare(f"espnet ({arch}) vs Speech2Embedding", batched, reference)


def test_espnet_batches_identical_lengths_together(espnet, models, monkeypatch):
    segments = equal_length_segments()
    resamplers = ResamplerCache()
    segment_waves = {u.utt_id: load_audio(u, RATE, resamplers) for u in segments}
    assert [len(w) for w in segment_waves.values()] == [32000, 32000, 32000, 40000]
    sizes = spy_batches(monkeypatch, espnet)
    batched = engine_outputs(espnet, segments, 300)
    assert sorted(sizes) == [1, 3]  # the three 2 s segments in one pass, the 2.5 s one alone
    s2e = speech2embedding(models["ecapa_tdnn"])
    compare("espnet equal-length batch vs Speech2Embedding", batched,
            {u: s2e(w)[0].numpy() for u, w in segment_waves.items()})


@pytest.mark.kernels
def test_espnet_batch_size_does_not_change_embeddings(espnet, espnet_batched, utterances):
    chosen = utterances[:6] + equal_length_segments()
    runs = {seconds: engine_outputs(espnet, chosen, seconds) for seconds in (1, 30, 300)}
    for seconds in (1, 30):
        for u in chosen:
            a, b = runs[seconds][u.utt_id], runs[300][u.utt_id]
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * np.abs(b).max())
    for u in utterances[:6]:
        np.testing.assert_allclose(runs[300][u.utt_id], espnet_batched[u.utt_id],
                                   rtol=1e-5, atol=1e-5 * np.abs(espnet_batched[u.utt_id]).max())


# --- rawnet: multi-crop ------------------------------------------------------------------------

def reference_crops(wave, crop=3 * RATE, num=10):
    """The crops as documented: wrap-pad to crop + 1 samples, ``num`` evenly spaced starts."""
    if len(wave) < crop:
        wave = np.pad(wave, (0, crop - len(wave) + 1), "wrap")
    return [wave[int(s):int(s) + crop] for s in np.linspace(0, len(wave) - crop, num=num)]


@pytest.fixture(scope="module")
def rawnet_run(rawnet, utterances):
    """Engine outputs with 300 s batches, and the number of utterances in each forward pass."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        sizes = spy_batches(monkeypatch, rawnet)
        return engine_outputs(rawnet, utterances, 300), sizes


@pytest.fixture(scope="module")
def rawnet_batched(rawnet_run):
    return rawnet_run[0]


@pytest.mark.kernels
def test_rawnet_matches_crop_by_crop_speech2embedding(rawnet_run, models, waves):
    batched, sizes = rawnet_run
    assert max(sizes) == 10  # 300 s / (10 crops x 3 s): ten utterances' crops in one pass
    s2e = speech2embedding(models["rawnet3"])
    reference = {}
    for utt, wave in waves.items():
        crops = np.stack([s2e(crop)[0].numpy() for crop in reference_crops(wave)])
        reference[utt] = (crops / np.linalg.norm(crops, axis=1, keepdims=True)).mean(axis=0)
    assert all(batched[u].shape == (64,) for u in reference)
    compare("rawnet vs crop-by-crop Speech2Embedding", batched, reference)


def test_rawnet_crop_positions(rawnet, waves):
    espnet_eval = SpkPreprocessor(train=False, target_duration=3.0, num_eval=10,
                                  noise_apply_prob=0.0, rir_apply_prob=0.0)
    # Short: LJSpeech 1.54 s (24635 samples) -> wrap-padded to 48001 -> starts 0 x 9, then 1.
    short = waves["ljspeech-lj-002-0020"]
    n = len(short)
    assert n == 24635
    crops = rawnet.prepare(short)
    assert crops.shape == (10, 48000) and crops.dtype == np.float32
    assert list(rawnet.crop_starts(48001)) == [0] * 9 + [1]
    for crop in crops[:9]:
        np.testing.assert_array_equal(crop[:n], short)
        np.testing.assert_array_equal(crop[n:], short[:48000 - n])  # the repeat
    np.testing.assert_array_equal(crops[9], np.concatenate([short[1:], short[:48000 - n + 1]]))
    # Long: JFK 11 s (176000 samples) -> starts int(k * 128000 / 9), k = 0..9.
    long = waves["jfk-inaugural1961"]
    assert len(long) == 176000
    starts = [int(k * 128000 / 9) for k in range(10)]
    assert list(rawnet.crop_starts(len(long))) == starts
    crops = rawnet.prepare(long)
    for crop, start in zip(crops, starts):
        np.testing.assert_array_equal(crop, long[start:start + 48000])
    # Both as ESPnet's own evaluation preprocessing (SpkPreprocessor, train=False) cuts them.
    for wave in (short, long):
        espnet_crops = espnet_eval._speech_process({"speech": wave, "speech2": wave})["speech"]
        np.testing.assert_array_equal(rawnet.prepare(wave), espnet_crops)


@pytest.mark.kernels
def test_rawnet_batch_size_does_not_change_embeddings(rawnet, rawnet_batched, utterances):
    chosen = utterances[:8]
    for seconds in (1, 30):
        run = engine_outputs(rawnet, chosen, seconds)
        assert_equal_to_rounding(run, {u.utt_id: rawnet_batched[u.utt_id] for u in chosen},
                                 "batches of 1, 3 and 10 utterances' crops: the convolutions "
                                 "round by their batch size")


def test_rawnet_crop_options(models):
    extractor = RawNet3Extractor(str(models["rawnet3"]), num_crops=4, crop_seconds=2.0)
    crops = extractor.prepare(np.zeros(RATE, dtype=np.float32))
    assert crops.shape == (4, 32000) and extractor.cost(crops) == 8.0
    assert extractor.batch_cost([8.0, 8.0]) == 16.0


# --- both --------------------------------------------------------------------------------------

@pytest.mark.parametrize("toolkit", ["espnet", "rawnet"])
def test_speech_shorter_than_the_model_needs_is_refused(toolkit, espnet, rawnet, tmp_path):
    samples, rate = soundfile.read(SAMPLES / "audio" / "arctic-aew-a0001.wav", dtype="float32")
    path = tmp_path / "blip.wav"
    soundfile.write(path, samples[:800], rate)  # 0.05 s
    extractor = {"espnet": espnet, "rawnet": rawnet}[toolkit]
    with pytest.raises(UtteranceError, match="'blip'.*too short: 0.050 s"):
        engine_outputs(extractor, [Utterance("blip", str(path))], 300)


def test_model_argument(models, tmp_path):
    with pytest.raises(ValueError, match="--model"):
        load_extractor("espnet", None)
    # A *.pth file is taken with the config.yaml beside it.
    extractor = load_extractor("espnet", str(models["ecapa_tdnn"] / "model.pth"))
    assert extractor.sample_rate == 16000
    # Two *.pth beside config.yaml are ambiguous.
    (tmp_path / "config.yaml").write_text((models["ecapa_tdnn"] / "config.yaml").read_text())
    for name in ("1epoch.pth", "valid.eer.best.pth"):
        (tmp_path / name).write_bytes((models["ecapa_tdnn"] / "model.pth").read_bytes())
    with pytest.raises(ValueError, match="exactly one \\*.pth"):
        load_extractor("rawnet", str(tmp_path))


def test_loading_leaves_the_text_front_ends_unloaded_until_used(models, tmp_path):
    # ESPnet's import pulls in g2p_en, whose own import calls nltk.download for tagger and
    # dictionary data it lacks (on an offline node whose network drops packets, every job
    # would wait there for the TCP timeout), and tacotron_cleaner, whose inflect takes 2 s.
    # Speaker models use neither; text cleaning and g2p still work when used afterwards.
    # ESPnet's functions are not instrumented with type checks (2.7 s at import), and
    # typeguard's decorator instruments again afterwards.
    script = "\n".join([
        "import sys, nltk, typeguard",
        f"nltk.data.path[:] = [{str(tmp_path)!r}]  # a node without the data",
        "nltk.download = lambda *args, **kwargs: sys.exit(f'nltk.download{args} was called')",
        "from speechdump.extractors import load_extractor",
        f"extractor = load_extractor('espnet', {str(models['ecapa_tdnn'])!r})",
        "import numpy as np",
        "wave = np.random.default_rng(0).standard_normal(16000).astype(np.float32)",
        "print('embedding', extractor.forward([extractor.prepare(wave)])[0].shape)",
        "print('loaded', sorted({'g2p_en', 'inflect', 'tacotron_cleaner'} & set(sys.modules)))",
        "from espnet2.train.preprocessor import CommonPreprocessor",
        "def checks(f): return [n for n in f.__code__.co_names if 'check_argument' in n]",
        "print('espnet checks', checks(CommonPreprocessor._speech_process))",
        "def double(x: int) -> int: return 2 * x",
        "print('later checks', checks(typeguard.typechecked(double)))",
        "from espnet2.text.cleaner import TextCleaner",
        "print(TextCleaner('tacotron')('Mr. Smith paid 123.'))",
        "nltk.download = lambda *args, **kwargs: False",
        "import g2p_en.g2p  # a later import gets the real module",
        "import espnet2.text.phoneme_tokenizer as tokenizer",
        "print('same G2p', tokenizer.g2p_en.G2p is g2p_en.g2p.G2p)",
    ])
    (tmp_path / "load.py").write_text(script)  # a file: typeguard instruments from source
    result = subprocess.run([sys.executable, str(tmp_path / "load.py")], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "embedding (" in result.stdout
    assert "loaded []" in result.stdout
    assert "espnet checks []" in result.stdout
    assert "later checks ['check_argument_types_internal']" in result.stdout
    assert "MISTER SMITH PAID ONE HUNDRED TWENTY THREE." in result.stdout
    assert "same G2p True" in result.stdout
