"""Shared fixtures: the real speech samples as a Kaldi data dir, and an environment for stages."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples" / "real_speech"
SLURM_START = REPO / "tools" / "slurm" / "start.sh"
SLURM_DIR = Path(os.environ.get("SPEECHDUMP_SLURM_DIR", "/var/lib/speechdump-slurm"))


def read_pairs(path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n").split(" ", 1) for line in f if line.strip()]


def make_data_dir(dest: Path, keep=None) -> Path:
    """The sample corpus as a data dir with absolute wav.scp paths (optionally only ``keep``)."""
    dest.mkdir(parents=True, exist_ok=True)
    wanted = (lambda key: key in keep) if keep is not None else (lambda key: True)
    for name in ("wav.scp", "utt2spk", "text", "utt2dur"):
        with open(dest / name, "w", encoding="utf-8") as out:
            for key, value in read_pairs(SAMPLES / name):
                if wanted(key):
                    value = str(SAMPLES / value) if name == "wav.scp" else value
                    out.write(f"{key} {value}\n")
    spk2utt = subprocess.run([str(REPO / "utils" / "utt2spk_to_spk2utt.pl"), str(dest / "utt2spk")],
                             check=True, capture_output=True, text=True).stdout
    (dest / "spk2utt").write_text(spk2utt)
    return dest


@pytest.fixture
def data_dir(tmp_path):
    return make_data_dir(tmp_path / "data")


@pytest.fixture(scope="session")
def sample_utterances():
    """(utt id, absolute path) of every sample recording."""
    return [(key, str(SAMPLES / value)) for key, value in read_pairs(SAMPLES / "wav.scp")]


@pytest.fixture(scope="session")
def utterances(sample_utterances):
    """Every sample recording as an Utterance."""
    from speechdump.data import Utterance

    return [Utterance(utt, path) for utt, path in sample_utterances]


@pytest.fixture(scope="session")
def waves(utterances):
    """utt id -> the 16 kHz mono waveform speechdump decodes: the input every reference uses."""
    from speechdump.audio import ResamplerCache, load_audio

    resamplers = ResamplerCache()
    return {u.utt_id: load_audio(u, 16000, resamplers) for u in utterances}


@pytest.fixture(scope="session")
def stage_env():
    """Environment in which stages find this interpreter as python3 and the utils."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}:{REPO / 'utils'}:{env['PATH']}"
    env["LC_ALL"] = "C"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def engine_outputs(extractor, utterances, batch_seconds=300.0) -> dict:
    """{utt id: output} of every utterance through the engine (two loader threads, no bar)."""
    from speechdump import engine

    out = {}
    engine.run(utterances, extractor, out.__setitem__,
               engine.EngineOptions(batch_seconds=batch_seconds, num_workers=2, progress=False))
    return out


def stitch_frames(windows, starts, total, unit=320):
    """An independent reference for stitched windows: ``windows[k]`` (per layer, [frames, dim])
    starts at sample ``starts[k]`` (a multiple of ``unit``, the samples per frame); each of the
    ``total`` frames is taken from the window in which it is farthest from an edge (ties: the
    later window). Returns the stitched frames per layer."""
    import numpy as np

    out = [np.zeros((total, h.shape[1]), np.float32) for h in windows[0]]
    for f in range(total):
        best, margin = None, -1
        for k, s in enumerate(starts):
            a, b = s // unit, s // unit + len(windows[k][0])
            if a <= f < b and min(f - a, b - 1 - f) >= margin:
                best, margin = k, min(f - a, b - 1 - f)
        for layer, h in enumerate(windows[best]):
            out[layer][f] = h[f - starts[best] // unit]
    return out


def run_stage(args, env, cwd=None, check=True, script="extract_spk_embed.sh", **kwargs):
    """Runs scripts/<script> (the speaker-embedding stage by default); returns the
    CompletedProcess (text, both streams). ``kwargs`` go to subprocess.run."""
    proc = subprocess.run([str(REPO / "scripts" / script), *map(str, args)], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=600, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"stage failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def run_feats_stage(args, env, check=True, **kwargs):
    """Runs scripts/extract_ssl_feats.sh, as run_stage."""
    return run_stage(args, env, check=check, script="extract_ssl_feats.sh", **kwargs)


def copy_sample(name: str, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(SAMPLES / "audio" / name, dest)
    return dest


def make_segments_data_dir(dest: Path, piece_seconds: float) -> Path:
    """Every sample recording cut into consecutive pieces: many real-speech utterances."""
    dest.mkdir(parents=True, exist_ok=True)
    durations = dict(read_pairs(SAMPLES / "utt2dur"))
    wav, segments, utt2spk, utt2dur = [], [], [], []
    speakers = dict(read_pairs(SAMPLES / "utt2spk"))
    for reco, path in read_pairs(SAMPLES / "wav.scp"):
        wav.append(f"{reco} {SAMPLES / path}\n")
        start, index = 0.0, 0
        while start + piece_seconds <= float(durations[reco]):
            utt = f"{reco}-{index:03d}"
            segments.append(f"{utt} {reco} {start:.2f} {start + piece_seconds:.2f}\n")
            utt2spk.append(f"{utt} {speakers[reco]}\n")
            utt2dur.append(f"{utt} {piece_seconds:.2f}\n")
            start, index = start + piece_seconds, index + 1
    for name, lines in (("wav.scp", wav), ("segments", segments), ("utt2spk", utt2spk),
                        ("utt2dur", utt2dur)):
        (dest / name).write_text("".join(sorted(lines)))
    spk2utt = subprocess.run([str(REPO / "utils" / "utt2spk_to_spk2utt.pl"), str(dest / "utt2spk")],
                             check=True, capture_output=True, text=True).stdout
    (dest / "spk2utt").write_text(spk2utt)
    return dest


@pytest.fixture(scope="session")
def cluster():
    """Starts the local cluster; returns the environment that talks to it."""
    try:
        res = subprocess.run(["bash", str(SLURM_START)], capture_output=True, text=True,
                             timeout=900)
    except subprocess.TimeoutExpired:
        pytest.skip("tools/slurm/start.sh did not finish in 15 minutes")
    env = dict(os.environ)
    conf = SLURM_DIR / "slurm.conf"
    if conf.exists():
        env["SLURM_CONF"] = str(conf)
    try:
        info = subprocess.run(["sinfo", "-h", "-o", "%c %T"], env=env, capture_output=True,
                              text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        info = None
        why = str(e)
    if info is None or info.returncode != 0 or not info.stdout.strip():
        why = info.stderr.strip() if info is not None else why
        pytest.skip("no local Slurm cluster (sinfo: %s); tools/slurm/start.sh said: %s"
                    % (why, (res.stdout + res.stderr).strip()[-500:]))
    cpus = int(info.stdout.split()[0].rstrip("+"))
    env["TEST_CLUSTER_CPUS"] = str(cpus)
    return env


# Two runs whose kernels differ (other batches, thread counts, CPUs or kernel settings) agree
# within float32 rounding through the model: vectors (embeddings) by cosine, matrices (frames) by
# their largest difference against their largest value. Measured on the sample recordings under
# both of CI's kernel configurations (.ci/run, AMD EPYC family 25): 1 - cosine at most 6.3e-9
# (a random-init RawNet3 on 1 and 2 threads), frames apart by at most 5.2e-7 (w2v-BERT layers at
# --nj 1 and 3); asserted with a wide margin, since other CPUs pick other kernels again.
VECTOR_ROUNDING = 1e-5  # 1 - cosine
FRAMES_ROUNDING = 1e-4  # max |a - b| / max |b|


def rounding_apart(a, b) -> float:
    """How far two outputs are apart: 1 - cosine for vectors, else max |a - b| / max |b|."""
    import numpy as np

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    if a.ndim == 1:
        norms = np.linalg.norm(a) * np.linalg.norm(b)
        return float(1 - a @ b / norms) if norms else float(np.abs(a - b).max())
    scale = float(np.abs(b).max()) if b.size else 0.0
    return float(np.abs(a - b).max()) / scale if scale else float(np.abs(a - b).max())


def assert_equal_to_rounding(got, want, why: str) -> None:
    """``got`` and ``want`` ({key: array, or {stream: array}}) hold the same keys, in the same
    order, and every float array agrees within rounding (``rounding_apart`` against
    VECTOR_ROUNDING or FRAMES_ROUNDING); integer arrays must be equal. ``why`` says where their
    rounding comes from, for the failure message."""
    import numpy as np

    assert list(got) == list(want)
    worst = {}  # kind -> (apart, where)
    for key, value in want.items():
        streams = value if isinstance(value, dict) else {"": value}
        other = got[key] if isinstance(value, dict) else {"": got[key]}
        assert list(other) == list(streams), key
        for name, array in streams.items():
            if np.asarray(array).dtype.kind in "iu":
                np.testing.assert_array_equal(other[name], array, err_msg=f"{key} {name}")
                continue
            kind = "vector" if np.ndim(array) == 1 else "frames"
            apart = rounding_apart(other[name], array)
            if apart >= worst.get(kind, (-1.0,))[0]:
                worst[kind] = (apart, f"{key} {name}".strip())
    for kind, (apart, where) in worst.items():
        measure, tolerance = (("1 - cosine", VECTOR_ROUNDING) if kind == "vector"
                              else ("max difference / max value", FRAMES_ROUNDING))
        print(f"\nrounding: {kind} {measure} {apart:.2e} ({where}); from {why}")
        assert apart <= tolerance, f"{where}: {measure} {apart:.2e} > {tolerance:.0e}; " \
                                   f"rounding expected from {why}"
