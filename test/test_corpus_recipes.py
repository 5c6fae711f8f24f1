"""egs/{vctk,librispeech,libritts}/spk1: local/data.sh on small fake corpora with the real layouts
(real speech from samples/real_speech, written in each corpus's format and rate), and the VCTK
recipe end to end."""

import subprocess
from functools import lru_cache
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile
import torch
import torchaudio

from conftest import REPO, SAMPLES, read_pairs

EGS = REPO / "egs"
SAMPLE_TEXT = dict(read_pairs(SAMPLES / "text"))


@lru_cache(maxsize=None)
def _speech(name: str, rate: int) -> np.ndarray:
    samples, orig = soundfile.read(SAMPLES / "audio" / name, dtype="float32", always_2d=True)
    mono = torch.from_numpy(samples.mean(axis=1))
    if orig != rate:
        mono = torchaudio.functional.resample(mono, orig, rate)
    return mono.numpy()


def write_audio(path: Path, sample: str, rate: int, fmt: str) -> Path:
    """Sample recording ``sample`` as 16-bit mono ``fmt`` (FLAC or WAV) at ``rate`` Hz."""
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, _speech(sample, rate), rate, format=fmt, subtype="PCM_16")
    return path


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def lines(*rows) -> str:
    return "".join(f"{row}\n" for row in rows)


def data_sh(recipe: str, args, env, check=True):
    proc = subprocess.run(["local/data.sh", *map(str, args)], cwd=EGS / recipe / "spk1", env=env,
                          capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"data.sh failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def validate(data: Path, env) -> None:
    proc = subprocess.run([str(REPO / "utils" / "validate_data_dir.sh"), "--no-feats", "--no-text",
                           str(data)], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def check_dir(data: Path, env, wav, utt2spk, spk2utt, text, spk2gender) -> None:
    """Exact contents of the data dir (wav: id -> absolute path), and that it validates."""
    assert (data / "wav.scp").read_text() == lines(*(f"{k} {v}" for k, v in wav.items()))
    assert (data / "utt2spk").read_text() == lines(*utt2spk)
    assert (data / "spk2utt").read_text() == lines(*spk2utt)
    assert (data / "text").read_text() == lines(*text)
    assert (data / "spk2gender").read_text() == lines(*spk2gender)
    assert all(Path(v).is_absolute() and Path(v).is_file() for v in wav.values())
    validate(data, env)


# ---------------------------------------------------------------------------------------------
# VCTK

VCTK_TXT = {u: SAMPLE_TEXT[f"vctk-{u.replace('_', '-')}"]
            for u in ("p225_003", "p225_008", "p226_003", "p226_008", "p226_011")}


def make_vctk_092(root: Path) -> Path:
    """p225: 3 recordings (p225_011 without txt), mic2 for two; p226: 3, mic2 for one;
    p315: 2 recordings and no txt at all, as in the real corpus."""
    audio = root / "wav48_silence_trimmed"
    for spk, nums in (("p225", ("003", "008", "011")), ("p226", ("003", "008", "011"))):
        for num in nums:
            write_audio(audio / spk / f"{spk}_{num}_mic1.flac", f"vctk-{spk}-{num}.wav", 48000,
                        "FLAC")
    for utt in ("p225_003", "p225_008", "p226_003"):
        sample = f"vctk-{utt.replace('_', '-')}.wav"
        write_audio(audio / utt[:4] / f"{utt}_mic2.flac", sample, 48000, "FLAC")
    write_audio(audio / "p315" / "p315_001_mic1.flac", "vctk-p238-165.wav", 48000, "FLAC")
    write_audio(audio / "p315" / "p315_002_mic1.flac", "vctk-p301-102.wav", 48000, "FLAC")
    write(audio / "log.txt", "trimmed with a silence threshold\n")
    for utt, txt in VCTK_TXT.items():
        # one with a Windows line ending and stray blanks: squeezed in text
        write(root / "txt" / utt[:4] / f"{utt}.txt",
              f"  {txt}  \r\n" if utt == "p226_011" else f"{txt}\n")
    write(root / "speaker-info.txt", lines(
        "ID  AGE  GENDER  ACCENTS  REGION COMMENTS ",
        "p225  23  F    English    Southern  England",
        "p226  22  M    English    Surrey",
        "p280  25  F    French    Paris (mic2 files unavailable)",
        "p315  18  M    American    Alabama"))
    return root


def make_vctk_080(root: Path) -> Path:
    for spk in ("p225", "p226"):
        for num in ("003", "008"):
            write_audio(root / "wav48" / spk / f"{spk}_{num}.wav", f"vctk-{spk}-{num}.wav", 48000,
                        "WAV")
            if (spk, num) != ("p226", "008"):
                write(root / "txt" / spk / f"{spk}_{num}.txt", VCTK_TXT[f"{spk}_{num}"] + "\n")
    write(root / "speaker-info.txt", lines(
        "ID  AGE  GENDER  ACCENTS  REGION", "225  23  F    English    Southern  England",
        "226  22  M    English    Surrey"))
    return root


@pytest.fixture(scope="module")
def vctk_092(tmp_path_factory):
    return make_vctk_092(tmp_path_factory.mktemp("vctk") / "VCTK-Corpus-0.92")


def test_vctk_092(vctk_092, tmp_path, stage_env):
    proc = data_sh("vctk", ["--corpus", vctk_092, tmp_path], stage_env)
    audio = vctk_092 / "wav48_silence_trimmed"
    utts = ["p225_003", "p225_008", "p225_011", "p226_003", "p226_008", "p226_011", "p315_001",
            "p315_002"]
    check_dir(tmp_path / "all", stage_env,
              wav={u: f"{audio}/{u[:4]}/{u}_mic1.flac" for u in utts},
              utt2spk=[f"{u} {u[:4]}" for u in utts],
              spk2utt=["p225 p225_003 p225_008 p225_011", "p226 p226_003 p226_008 p226_011",
                       "p315 p315_001 p315_002"],
              text=[f"{u} {t}" for u, t in VCTK_TXT.items()],
              spk2gender=["p225 f", "p226 m", "p315 m"])
    assert "3 recordings have no transcript" in proc.stdout
    assert "p225_011 p315_001 p315_002" in proc.stdout


def test_vctk_092_mic2(vctk_092, tmp_path, stage_env):
    data_sh("vctk", ["--corpus", vctk_092, "--mic", "mic2", tmp_path], stage_env)
    audio = vctk_092 / "wav48_silence_trimmed"
    utts = ["p225_003", "p225_008", "p226_003"]
    check_dir(tmp_path / "all", stage_env,
              wav={u: f"{audio}/{u[:4]}/{u}_mic2.flac" for u in utts},
              utt2spk=[f"{u} {u[:4]}" for u in utts],
              spk2utt=["p225 p225_003 p225_008", "p226 p226_003"],
              text=[f"{u} {VCTK_TXT[u]}" for u in utts],
              spk2gender=["p225 f", "p226 m"])


def test_vctk_080(tmp_path, stage_env):
    corpus = make_vctk_080(tmp_path / "VCTK-Corpus")
    data_sh("vctk", ["--corpus", corpus, tmp_path / "data"], stage_env)
    utts = ["p225_003", "p225_008", "p226_003", "p226_008"]
    check_dir(tmp_path / "data" / "all", stage_env,
              wav={u: f"{corpus}/wav48/{u[:4]}/{u}.wav" for u in utts},
              utt2spk=[f"{u} {u[:4]}" for u in utts],
              spk2utt=["p225 p225_003 p225_008", "p226 p226_003 p226_008"],
              text=[f"{u} {VCTK_TXT[u]}" for u in utts[:3]],
              spk2gender=["p225 f", "p226 m"])
    proc = data_sh("vctk", ["--corpus", corpus, "--mic", "mic2", tmp_path / "data"], stage_env,
                   check=False)
    assert proc.returncode == 1 and "one recording per utterance" in proc.stderr


def test_vctk_end_to_end(vctk_092, tmp_path, stage_env):
    proc = subprocess.run(["./run.sh", "--nj", "2", "--datadir", str(tmp_path / "data"),
                           "--dumpdir", str(tmp_path / "dump")],
                          cwd=EGS / "vctk" / "spk1", env={**stage_env, "VCTK": str(vctk_092)},
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = tmp_path / "dump" / "resemblyzer" / "all"
    utts = list(kaldiio.load_scp_sequential(str(out / "resemblyzer.scp")))
    assert [k for k, _ in utts] == list(VCTK_TXT)
    assert all(v.shape == (256,) and np.isfinite(v).all() for _, v in utts)
    assert [k for k, _ in kaldiio.load_scp_sequential(str(out / "spk_resemblyzer.scp"))] == \
        ["p225", "p226"]
    assert [k for k, _ in read_pairs(out / "dropped_utts")] == ["p225_011", "p315_001", "p315_002"]
    assert (out / "report" / "resemblyzer.png").stat().st_size > 10_000
    assert len((tmp_path / "data" / "all" / "utt2dur").read_text().splitlines()) == 8


# ---------------------------------------------------------------------------------------------
# LibriSpeech

LS_TEXT = {"19-198-0000": "IN EIGHTEEN THIRTEEN", "19-198-0001": "EIGHT THE PRESS YARD",
           "1688-142285-0003": "PLACEHOLDER TRANSCRIPT THREE",
           "1688-142285-0006": "PLACEHOLDER TRANSCRIPT SIX",
           "1998-15444-0001": "PLACEHOLDER TRANSCRIPT ONE",
           "1998-15444-0003": "PLACEHOLDER TRANSCRIPT THREE",
           "1998-15444-0010": "A LINE WITHOUT A RECORDING",
           "2033-164914-0001": "PLACEHOLDER TRANSCRIPT ONE",
           "2033-164914-0003": "PLACEHOLDER TRANSCRIPT THREE"}
LS_AUDIO = {"19-198-0000": "ljspeech-lj-002-0020.wav", "19-198-0001": "ljspeech-lj-002-0035.wav",
            **{u: f"ls-{u}.flac" for u in ("1688-142285-0003", "1688-142285-0006",
                                           "1998-15444-0001", "1998-15444-0003",
                                           "2033-164914-0001", "2033-164914-0003")},
            "1998-15444-0009": "ls-1998-15444-0009.flac"}  # not in its trans.txt
LS_SUBSET = {"19": "dev-clean", "1688": "dev-clean", "1998": "dev-clean", "2033": "test-clean"}


def ls_path(root: Path, utt: str, ext: str, sep: str = "-") -> Path:
    spk, chapter = utt.split(sep)[:2]
    return root / LS_SUBSET[spk] / spk / chapter / f"{utt}.{ext}"


@pytest.fixture(scope="module")
def librispeech(tmp_path_factory):
    """Speakers 19 (a prefix of 1998), 1688, 1998 in dev-clean, 2033 in test-clean."""
    root = tmp_path_factory.mktemp("librispeech") / "LibriSpeech"
    for utt, sample in LS_AUDIO.items():
        write_audio(ls_path(root, utt, "flac"), sample, 16000, "FLAC")
    chapters = {}
    for utt, text in LS_TEXT.items():
        chapters.setdefault(utt.rsplit("-", 1)[0], []).append(f"{utt} {text}")
    for chapter, rows in chapters.items():
        write(ls_path(root, chapter + "-x", "txt").with_name(f"{chapter}.trans.txt"), lines(*rows))
    write(root / "SPEAKERS.TXT", lines(
        "; Some speakers have read more than once.",
        ";ID  |SEX| SUBSET           |MINUTES| NAME",
        "19   | F | dev-clean        | 25.19 | Reader Nineteen",
        "1688 | M | dev-clean        | 25.02 | Reader Sixteen",
        "1998 | F | dev-clean        | 25.03 | Reader Ninety",
        "2033 | M | test-clean       | 25.01 | Reader Twenty"))
    return root


@pytest.mark.parametrize("via_parent", [True, False])
def test_librispeech(librispeech, tmp_path, stage_env, via_parent):
    corpus = librispeech.parent if via_parent else librispeech
    proc = data_sh("librispeech", ["--corpus", corpus, tmp_path], stage_env)
    dev = ["1688-142285-0003", "1688-142285-0006", "19-198-0000", "19-198-0001", "1998-15444-0001",
           "1998-15444-0003", "1998-15444-0009"]
    check_dir(tmp_path / "dev_clean", stage_env,
              wav={u: str(ls_path(librispeech, u, "flac")) for u in dev},
              utt2spk=[f"{u} {u.split('-')[0]}" for u in dev],
              spk2utt=["1688 1688-142285-0003 1688-142285-0006", "19 19-198-0000 19-198-0001",
                       "1998 1998-15444-0001 1998-15444-0003 1998-15444-0009"],
              text=[f"{u} {LS_TEXT[u]}" for u in dev if u in LS_TEXT],
              spk2gender=["1688 m", "19 f", "1998 f"])
    test = ["2033-164914-0001", "2033-164914-0003"]
    check_dir(tmp_path / "test_clean", stage_env,
              wav={u: str(ls_path(librispeech, u, "flac")) for u in test},
              utt2spk=[f"{u} 2033" for u in test], spk2utt=["2033 " + " ".join(test)],
              text=[f"{u} {LS_TEXT[u]}" for u in test], spk2gender=["2033 m"])
    assert "1 recordings have no transcript (kept in wav.scp, left out of text): 1998-15444-0009" \
        in proc.stdout


def test_librispeech_subsets_and_missing_subset(librispeech, tmp_path, stage_env):
    data_sh("librispeech", ["--corpus", librispeech, "--subsets", "test-clean", tmp_path],
            stage_env)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test_clean"]
    proc = data_sh("librispeech", ["--corpus", librispeech, "--subsets",
                                   "dev-clean,train-clean-100", tmp_path], stage_env, check=False)
    assert proc.returncode == 1
    assert f"{librispeech}/train-clean-100 is missing (there: dev-clean test-clean )" in proc.stderr


# ---------------------------------------------------------------------------------------------
# LibriTTS

TTS_UTTS = {"19_198_000000_000000": "ljspeech-lj-002-0020.wav",
            "19_198_000000_000001": "ljspeech-lj-002-0035.wav",
            "1688_142285_000003_000000": "ls-1688-142285-0003.flac",
            "1688_142285_000006_000000": "ls-1688-142285-0006.flac",
            "1998_15444_000001_000000": "ls-1998-15444-0001.flac",
            "1998_15444_000003_000000": "ls-1998-15444-0003.flac",  # .original.txt only
            "1998_15444_000009_000000": "ls-1998-15444-0009.flac"}  # no text file
TTS_NORMALIZED = {u: f"Placeholder normalized text {i}." for i, u in enumerate(TTS_UTTS)
                  if u not in ("1998_15444_000003_000000", "1998_15444_000009_000000")}
TTS_ORIGINAL = {u: f"Placeholder \u201coriginal\u201d text {i}." for i, u in enumerate(TTS_UTTS)
                if u != "1998_15444_000009_000000"}


def make_libritts(root: Path) -> Path:
    for utt, sample in TTS_UTTS.items():
        wav = write_audio(ls_path(root, utt, "wav", sep="_"), sample, 24000, "WAV")
        for kind, texts in (("normalized", TTS_NORMALIZED), ("original", TTS_ORIGINAL)):
            if utt in texts:
                write(wav.with_name(f"{utt}.{kind}.txt"), texts[utt])  # no newline, as released
    for chapter in ("19_198", "1688_142285", "1998_15444"):
        rows = [f"{u}\t{TTS_ORIGINAL.get(u, '')}\t{TTS_NORMALIZED.get(u, '')}"
                for u in TTS_UTTS if u.startswith(chapter + "_")]
        write(ls_path(root, chapter + "_x", "wav", sep="_").with_name(f"{chapter}.trans.tsv"),
              lines(*rows))
    write(root / "speakers.tsv", lines(
        "READER\tGENDER\tSUBSET\tNAME", "19\tF\tdev-clean\tReader A",
        "1688\tM\tdev-clean\tReader B", "1998\tF\tdev-clean\tReader C"))
    return root


@pytest.mark.parametrize("name, kind, via_parent", [("LibriTTS", "normalized", True),
                                                     ("LibriTTS_R", "original", False)])
def test_libritts(tmp_path, stage_env, name, kind, via_parent):
    root = make_libritts(tmp_path / "corpus" / name)
    args = ["--corpus", root.parent if via_parent else root, "--subsets", "dev-clean"]
    proc = data_sh("libritts", args + ["--text_kind", kind, tmp_path / "data"], stage_env)
    # speaker ids end in "_" so that both sort orders agree: 1688_ < 1998_ < 19_
    utts = sorted(TTS_UTTS)
    assert utts[-2:] == ["19_198_000000_000000", "19_198_000000_000001"]
    texts = TTS_NORMALIZED if kind == "normalized" else TTS_ORIGINAL
    check_dir(tmp_path / "data" / "dev_clean", stage_env,
              wav={u: str(ls_path(root, u, "wav", sep="_")) for u in utts},
              utt2spk=[f"{u} {u.split('_')[0]}_" for u in utts],
              spk2utt=["1688_ 1688_142285_000003_000000 1688_142285_000006_000000",
                       "1998_ 1998_15444_000001_000000 1998_15444_000003_000000 "
                       "1998_15444_000009_000000",
                       "19_ 19_198_000000_000000 19_198_000000_000001"],
              text=[f"{u} {texts[u]}" for u in utts if u in texts],
              spk2gender=["1688_ m", "1998_ f", "19_ f"])
    assert f"{len(utts) - len(texts)} recordings have no .{kind}.txt" in proc.stdout


def test_libritts_bad_text_kind(tmp_path, stage_env):
    proc = data_sh("libritts", ["--text_kind", "raw", tmp_path], stage_env, check=False)
    assert proc.returncode == 1 and "--text_kind must be normalized or original" in proc.stderr


def test_run_sh_takes_the_corpus_and_data_options(librispeech, tmp_path, stage_env):
    """The corpus from the environment, or everything through --local_data_opts (stages 1-2)."""
    tts = make_libritts(tmp_path / "LibriTTS")
    for recipe, env, args, sets in (
            ("librispeech", {"LIBRISPEECH": str(librispeech)}, [], ["dev_clean", "test_clean"]),
            ("libritts", {}, ["--sets", "dev_clean", "--local_data_opts",
                              f"--corpus {tts} --subsets dev-clean --text_kind original"],
             ["dev_clean"])):
        data = tmp_path / recipe
        proc = subprocess.run(["./run.sh", *args, "--stop_stage", "2", "--datadir", str(data)],
                              cwd=EGS / recipe / "spk1", env={**stage_env, **env},
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert sorted(p.name for p in data.iterdir()) == sets
        assert all((data / s / "utt2dur").is_file() for s in sets)
    assert (tmp_path / "libritts" / "dev_clean" / "text").read_text() == lines(
        *(f"{u} {t}" for u, t in sorted(TTS_ORIGINAL.items())))


# ---------------------------------------------------------------------------------------------
# usage and missing inputs

@pytest.mark.parametrize("recipe", ["vctk", "librispeech", "libritts"])
def test_usage_and_missing_corpus(recipe, tmp_path, stage_env):
    proc = data_sh(recipe, [], stage_env, check=False)
    assert proc.returncode == 1 and "Usage:" in proc.stderr and "--corpus" in proc.stderr
    missing = tmp_path / "no-such-corpus"
    proc = data_sh(recipe, ["--corpus", missing, tmp_path / "data"], stage_env, check=False)
    assert proc.returncode == 1 and f"'{missing}' does not exist" in proc.stderr
    # run.sh: its default corpus path is a placeholder to set
    env = {k: v for k, v in stage_env.items() if k not in ("VCTK", "LIBRISPEECH", "LIBRITTS")}
    proc = subprocess.run(["./run.sh", "--nj", "2", "--datadir", str(tmp_path / "data")],
                          cwd=EGS / recipe / "spk1", env=env, capture_output=True, text=True)
    assert proc.returncode == 1 and "'/path/to/" in proc.stderr and "does not exist" in proc.stderr


def test_vctk_missing_parts_are_named(tmp_path, stage_env):
    corpus = make_vctk_080(tmp_path / "VCTK-Corpus")
    (corpus / "speaker-info.txt").unlink()
    proc = data_sh("vctk", ["--corpus", corpus, tmp_path / "data"], stage_env, check=False)
    assert proc.returncode == 1 and f"{corpus}/speaker-info.txt is missing" in proc.stderr
    proc = data_sh("vctk", ["--corpus", tmp_path, tmp_path / "data"], stage_env, check=False)
    assert proc.returncode == 1
    assert "neither wav48_silence_trimmed/ (VCTK-Corpus-0.92) nor wav48/ (VCTK 0.80)" in proc.stderr
