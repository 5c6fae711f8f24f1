"""Quality tables (--toolkit quality, scripts/compute_quality.sh, utils/filter_data_dir.sh) on
the real speech samples: the SNR estimator against white noise mixed in at known SNRs, level
and clipping on constructed signals, the stage end to end, filtering with reasons, refusals."""

import os
import subprocess

import numpy as np
import pytest
import soundfile

from conftest import REPO, SAMPLES, make_data_dir, read_pairs, run_stage
from speechdump import quality
from speechdump.extractors import load_extractor

RATE = 16000
SNRS = (5, 10, 15, 20, 25)
PAD = 0.0  # seconds of digital silence put before and after each recording
CLEAN_FLOOR = 35.0  # dB: recordings whose own noise is this far down count as clean


def padded(wave):
    pad = np.zeros(int(PAD * RATE), dtype=np.float64)
    return np.concatenate([pad, np.asarray(wave, dtype=np.float64), pad])


def mixes(waves):
    """{(utt, snr): speech + white noise at snr dB}: SNR = mean(s^2) / mean(n^2) over the whole
    padded recording (speech padded with PAD s of zeros on each side; noise over all of it)."""
    rng = np.random.default_rng(26)
    out = {}
    for utt in sorted(waves):
        s = padded(waves[utt])
        for snr in SNRS:
            n = rng.standard_normal(len(s))
            n *= np.sqrt(np.mean(s ** 2) / 10 ** (snr / 10) / np.mean(n ** 2))
            out[utt, snr] = (s + n).astype(np.float32)
    return out


@pytest.fixture(scope="module")
def extractor():
    return load_extractor("quality")


@pytest.mark.kernels
def test_wada_table_is_the_monte_carlo(extractor):
    snr, g = quality.wada_table()
    np.testing.assert_array_equal(snr, quality.WADA_SNR)
    np.testing.assert_allclose(g, quality.WADA_G, atol=5.1e-6)  # stored to 5 places


def test_snr_estimates_within_3_db_at_known_snrs(waves, extractor):
    """Each recording's own noise (room, tape, microphone) is part of the mix: the reference is
    the SNR of speech to all its noise, 10 log10(S / (N_added + N_own)), N_own from the
    estimate on the padded original (c dB: N_own = S 10^(-c/10)). Where c >= CLEAN_FLOOR the
    recording's own noise moves the reference by under 0.4 dB at 25 dB, and there the estimate
    is checked against the added noise alone too."""
    clean = {utt: padded(w).astype(np.float32) for utt, w in waves.items()}
    mixed = mixes(waves)
    keys = sorted(clean) + sorted(mixed)
    inputs = [clean[k] if isinstance(k, str) else mixed[k] for k in keys]
    out = dict(zip(keys, extractor.forward([extractor.prepare(w) for w in inputs])))  # one batch
    snr_index = quality.FIELDS.index("snr_db")
    errors, nominal = {s: [] for s in SNRS}, {s: [] for s in SNRS}
    lines = [f"{'utterance':24s} {'own':>6s} " + " ".join(f"{s:>2d} dB: ref err" for s in SNRS)]
    for utt in sorted(clean):
        c = float(out[utt][snr_index])
        row = f"{utt:24s} {c:6.1f} "
        for snr in SNRS:
            ref = -10 * np.log10(10 ** (-snr / 10) + 10 ** (-c / 10))
            est = float(out[utt, snr][snr_index])
            errors[snr].append(est - ref)
            if c >= CLEAN_FLOOR:
                nominal[snr].append(est - snr)
            row += f"    {ref:5.1f} {est - ref:+4.1f}"
        lines.append(row)
    lines.append("error vs reference (own noise counted), all 26: " + "; ".join(
        f"{s} dB {min(e):+.1f}..{max(e):+.1f} (mean {np.mean(e):+.2f})"
        for s, e in errors.items()))
    lines.append(f"error vs added SNR alone, the {len(nominal[5])} with own >= {CLEAN_FLOOR} "
                 "dB: " + "; ".join(f"{s} dB {min(e):+.1f}..{max(e):+.1f}"
                                    for s, e in nominal.items()))
    print("\n".join(lines), flush=True)
    assert len(nominal[5]) >= 6
    for snr in SNRS:
        assert max(abs(e) for e in errors[snr]) <= 3.0, (snr, errors[snr])
        assert max(abs(e) for e in nominal[snr]) <= 3.0, (snr, nominal[snr])


def test_level_and_clipping_on_constructed_signals(waves, tmp_path):
    t = np.arange(RATE) / RATE
    sine = np.sin(2 * np.pi * 440 * t)
    assert quality.level_dbfs(sine) == pytest.approx(-3.0103, abs=1e-3)  # full-scale sine
    assert quality.level_dbfs(0.1 * sine) == pytest.approx(-23.0103, abs=1e-3)
    assert quality.level_dbfs(np.zeros(100)) == quality.LEVEL_FLOOR
    assert quality.clip_ratio(sine) == pytest.approx(np.mean(np.abs(sine) >= 0.999))
    # A real utterance driven 4x past full scale and clipped, as a 16-bit file: the samples at
    # the rails (32767 and -32768) are what clip_ratio counts.
    speech = waves["arctic-aew-a0001"].astype(np.float64)
    loud = 4 * speech / np.max(np.abs(speech))
    clipped = np.clip(loud, -1.0, 32767 / 32768)
    path = tmp_path / "clipped.wav"
    soundfile.write(path, clipped, RATE, subtype="PCM_16")
    pcm = soundfile.read(path, dtype="int16")[0]
    expected = np.mean((pcm == 32767) | (pcm == -32768))
    assert 0.01 < expected == pytest.approx(np.mean(np.abs(loud) >= 32767 / 32768), abs=1e-4)
    decoded = soundfile.read(path, dtype="float32")[0]
    # |x| >= 0.999: the rails, and the few samples within 0.1 % below them
    assert quality.clip_ratio(decoded) == np.mean(np.abs(pcm / 32768) >= 0.999)
    assert expected <= quality.clip_ratio(decoded) < expected + 1e-3
    assert quality.level_dbfs(decoded) == pytest.approx(
        10 * np.log10(np.mean(pcm.astype(np.float64) ** 2) / 32768 ** 2), abs=1e-4)
    # the unclipped original is far from the rails
    assert quality.clip_ratio(speech) == 0.0
    # [T, C]: the times at which any channel is at the rails
    two = np.stack([speech, decoded], axis=1)
    assert quality.clip_ratio(two) == quality.clip_ratio(two[:, ::-1])
    assert quality.clip_ratio(two) == quality.clip_ratio(decoded)


def clipped_in_one_channel(path):
    """The 44.1 kHz stereo sample as a 16-bit WAV at ``path``, its left channel driven 4x past
    full scale and clipped, its right one as it is."""
    stereo, rate = soundfile.read(SAMPLES / "audio" / "jfk-inaugural1961.flac", dtype="float64")
    stereo[:, 0] = np.clip(4 * stereo[:, 0] / np.max(np.abs(stereo[:, 0])), -1.0, 32767 / 32768)
    soundfile.write(path, stereo, rate, subtype="PCM_16")
    return path


def corpus(base, waves):
    """The 26 recordings (no text: the stage reads wav.scp), plus four made to be dropped:
    one clipped (16-bit, 4x past full scale), one clipped in one channel of two at 44.1 kHz,
    one with white noise at 5 dB, and 3 s of faint noise alone."""
    data = make_data_dir(base / "data")
    (data / "text").unlink()
    (data / "utt2dur").unlink()
    made = base / "made"
    made.mkdir()
    speech = waves["vctk-p225-008"].astype(np.float64)
    rng = np.random.default_rng(5)
    extra = {"zz-clipped": np.clip(4 * speech / np.max(np.abs(speech)), -1.0, 32767 / 32768),
             "zz-noisy": speech + rng.standard_normal(len(speech))
             * np.sqrt(np.mean(speech ** 2) / 10 ** 0.5),
             "zz-silence": 1e-4 * rng.standard_normal(3 * RATE)}
    for utt, wave in extra.items():
        soundfile.write(made / f"{utt}.wav", wave, RATE,
                        subtype="PCM_16" if utt == "zz-clipped" else "FLOAT")
    clipped_in_one_channel(made / "zz-clipped-left.wav")
    for name, line in (("wav.scp", lambda u: f"{made / u}.wav"), ("utt2spk", lambda u: u)):
        pairs = dict(read_pairs(data / name))
        pairs.update({u: line(u) for u in [*extra, "zz-clipped-left"]})
        (data / name).write_text("".join(f"{u} {pairs[u]}\n" for u in sorted(pairs)))
    spk = subprocess.run([str(REPO / "utils" / "utt2spk_to_spk2utt.pl"), str(data / "utt2spk")],
                         check=True, capture_output=True, text=True).stdout
    (data / "spk2utt").write_text(spk)
    return data


@pytest.fixture(scope="module")
def stage(tmp_path_factory, waves, stage_env):
    base = tmp_path_factory.mktemp("quality")
    data = corpus(base, waves)
    out = base / "q"
    proc = run_stage(["--nj", 2, "--min_silence", 0.12, data, out], stage_env,
                     script="compute_quality.sh")
    return data, out, proc


def table(path):
    return {u: float(v) for u, v in read_pairs(path)}


def test_stage_writes_the_tables(stage, extractor):
    from speechdump.audio import ResamplerCache, decode_audio, to_mono
    from speechdump.data import Utterance

    data, out, proc = stage
    assert "quality tables" in proc.stderr + proc.stdout
    utts = [u for u, _ in read_pairs(data / "wav.scp")]
    tables = {f: table(out / f"utt2{f}") for f in quality.FIELDS}
    for f in quality.FIELDS:
        assert [u for u, _ in read_pairs(out / f"utt2{f}")] == utts, f
    # the job record holds the VAD option given
    assert "0.12" in (out / "meta.json").read_text()
    # Each utterance alone through the extractor (same options): the batched engine's values.
    one = load_extractor("quality", min_silence=0.12)
    resamplers = ResamplerCache()
    wav = dict(read_pairs(data / "wav.scp"))
    for utt in utts[::3] + [u for u in utts if u.startswith("zz-")]:  # a third: time
        decoded, rate = decode_audio(Utterance(utt, wav[utt]))
        wave = to_mono(Utterance(utt, wav[utt]), decoded, rate, RATE, resamplers)
        alone = dict(zip(quality.FIELDS,
                         one.forward([one.prepare_decoded(wave, decoded)])[0].tolist()))
        assert tables["dur"][utt] == pytest.approx(len(wave) / RATE, abs=1e-4)
        assert tables["level_dbfs"][utt] == pytest.approx(alone["level_dbfs"], abs=0.006)
        assert tables["clip_ratio"][utt] == pytest.approx(alone["clip_ratio"], abs=1e-6)
        # VAD regions: batched against alone differ only by kernel rounding (test_vad.py)
        assert tables["speech_ratio"][utt] == pytest.approx(alone["speech_ratio"], abs=2e-3)
        assert tables["snr_db"][utt] == pytest.approx(alone["snr_db"], abs=0.1)
    assert tables["clip_ratio"]["zz-clipped"] > 0.01
    # Counted at 44.1 kHz in the channel that clipped: downmixed and resampled to 16 kHz, this
    # recording is never at full scale.
    left, _ = soundfile.read(data.parent / "made" / "zz-clipped-left.wav", dtype="int16")
    at_rails = np.mean((left[:, 0] == 32767) | (left[:, 0] == -32768))
    assert 0.05 < at_rails <= tables["clip_ratio"]["zz-clipped-left"] < at_rails + 1e-3
    assert quality.clip_ratio(wave_of(data, "zz-clipped-left")) == 0.0
    # the recordings as published: a few samples of some touch 0.999 of full scale
    assert max(v for u, v in tables["clip_ratio"].items() if not u.startswith("zz-clipped")) < 1e-3
    assert abs(tables["snr_db"]["zz-noisy"] - 5.0) < 3.0
    assert tables["speech_ratio"]["zz-silence"] == 0.0


def test_jobs_recorded_before_this_revision_run_again(tmp_path, stage_env):
    """quality is at revision 2 (the clip ratio of the audio as decoded, no longer of the 16 kHz
    downmix): a job whose record predates it (no revision in its config) is not reused."""
    import json

    data = make_data_dir(tmp_path / "data", keep={"arctic-aew-a0001", "jfk-inaugural1961"})
    (data / "text").unlink()
    out = tmp_path / "q"
    run_stage(["--nj", 1, data, out], stage_env, script="compute_quality.sh")
    done = out / "split1" / "done.1"
    record = json.loads(done.read_text())
    assert record["config"]["revision"] == 2
    del record["config"]["revision"]  # as a job of an earlier speechdump recorded it
    done.write_text(json.dumps(record))
    proc = run_stage(["--nj", 1, data, out], stage_env, script="compute_quality.sh")
    assert "job 1 ran: the toolkit's output changed in this speechdump (revision 1 -> 2)" \
        in proc.stdout + proc.stderr
    proc = run_stage(["--nj", 1, data, out], stage_env, script="compute_quality.sh")
    assert "job 1 ran" not in proc.stdout + proc.stderr


def wave_of(data, utt):
    """The 16 kHz mono waveform of ``utt`` of ``data``, as every toolkit gets it."""
    from speechdump.audio import ResamplerCache, load_audio
    from speechdump.data import Utterance

    return load_audio(Utterance(utt, dict(read_pairs(data / "wav.scp"))[utt]), RATE,
                      ResamplerCache())


def filter_dir(args, env):
    return subprocess.run([str(REPO / "utils" / "filter_data_dir.sh"), *map(str, args)],
                          env=env, capture_output=True, text=True)


def test_filter_data_dir_drops_with_reasons(stage, stage_env, tmp_path):
    data, out, _ = stage
    new = tmp_path / "kept"
    proc = filter_dir(["--quality_dir", out, "--min_speech_ratio", 0.5, "--min_snr_db", 10,
                       "--max_clip_ratio", 0.001, data, new], stage_env)
    assert proc.returncode == 0, proc.stderr
    print(proc.stdout + proc.stderr)
    dropped = dict(read_pairs(new / "dropped"))
    tables = {f: table(out / f"utt2{f}") for f in quality.FIELDS}
    expected = {u for u in tables["dur"] if tables["speech_ratio"][u] < 0.5
                or tables["snr_db"][u] < 10 or tables["clip_ratio"][u] > 0.001}
    assert set(dropped) == expected
    assert {"zz-clipped", "zz-noisy", "zz-silence"} <= expected
    assert "clip_ratio=" in dropped["zz-clipped"] and ">0.001" in dropped["zz-clipped"]
    assert dropped["zz-noisy"].startswith("snr_db=") and "<10" in dropped["zz-noisy"]
    assert "speech_ratio=0.0000<0.5" in dropped["zz-silence"]
    kept = [u for u, _ in read_pairs(data / "utt2spk") if u not in expected]
    assert [u for u, _ in read_pairs(new / "utt2spk")] == kept
    assert [u for u, _ in read_pairs(new / "wav.scp")] == kept
    assert not (new / "text").exists()
    spk2utt = {s: u.split() for s, u in read_pairs(new / "spk2utt")}
    assert sorted(u for us in spk2utt.values() for u in us) == sorted(kept)
    check = subprocess.run([str(REPO / "utils" / "validate_data_dir.sh"), "--no-feats",
                            "--no-text", str(new)], env=stage_env, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_filter_data_dir_keeps_segments_consistent(stage, stage_env, tmp_path):
    """A data dir with segments: wav.scp keeps the recordings of the segments kept."""
    data, out, _ = stage
    seg = tmp_path / "seg"
    seg.mkdir()
    utts = [u for u, _ in read_pairs(data / "utt2spk")]
    wav = dict(read_pairs(data / "wav.scp"))
    # each utterance a segment of a recording named after it (one segment per recording)
    (seg / "segments").write_text("".join(f"{u} r-{u} 0 {table(out / 'utt2dur')[u]}\n"
                                          for u in utts))
    (seg / "wav.scp").write_text("".join(f"r-{u} {wav[u]}\n" for u in utts))
    for name in ("utt2spk", "spk2utt"):
        (seg / name).write_text((data / name).read_text())
    new = tmp_path / "kept"
    proc = filter_dir(["--quality_dir", out, "--min_dur", 4.0, "--max_dur", 7.0, seg, new],
                      stage_env)
    assert proc.returncode == 0, proc.stderr
    dur = table(out / "utt2dur")
    kept = [u for u in utts if 4.0 <= dur[u] <= 7.0]
    assert [u for u, _ in read_pairs(new / "segments")] == kept
    assert [r for r, _ in read_pairs(new / "wav.scp")] == [f"r-{u}" for u in kept]
    assert all(r.startswith(("dur=",)) for r in dict(read_pairs(new / "dropped")).values())
    check = subprocess.run([str(REPO / "utils" / "validate_data_dir.sh"), "--no-feats",
                            "--no-text", str(new)], env=stage_env, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr


def test_filter_data_dir_refuses_missing_tables(stage, stage_env, tmp_path):
    data, out, _ = stage
    partial = tmp_path / "partial"
    partial.mkdir()
    for f in ("speech_ratio", "snr_db"):
        (partial / f"utt2{f}").write_text((out / f"utt2{f}").read_text())
    proc = filter_dir(["--quality_dir", partial, "--min_snr_db", 10, "--min_level_dbfs", -40,
                       data, tmp_path / "x"], stage_env)
    assert proc.returncode != 0
    assert f"--min_level_dbfs needs {partial}/utt2level_dbfs, which does not exist" in proc.stderr
    assert not (tmp_path / "x").exists()
    # a table without one of the data dir's utterances
    lines = (out / "utt2snr_db").read_text().splitlines(keepends=True)
    (partial / "utt2snr_db").write_text("".join(lines[1:]))
    proc = filter_dir(["--quality_dir", partial, "--min_snr_db", 10, data, tmp_path / "y"],
                      stage_env)
    assert proc.returncode != 0
    assert f"utt2snr_db has no line for utterance {lines[0].split()[0]}" in proc.stderr
    proc = filter_dir(["--quality_dir", partial, data, tmp_path / "z"], stage_env)
    assert proc.returncode != 0 and "no criterion given" in proc.stderr


def test_tables_reach_lhotse_cuts(stage, tmp_path, stage_env):
    pytest.importorskip("lhotse")
    import lhotse

    import speechdump.lhotse_export  # noqa: F401  (registers the reader of our arks)

    data, out, _ = stage
    proc = subprocess.run([os.environ.get("PYTHON", "python3"),
                           str(REPO / "pyscripts" / "export_lhotse.py"), "--tables", str(out),
                           str(data), str(tmp_path / "m"), str(out)], env=stage_env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    cuts = lhotse.CutSet.from_file(str(tmp_path / "m" / "cuts.jsonl.gz"))
    snr = table(out / "utt2snr_db")
    ratio = table(out / "utt2speech_ratio")
    assert sorted(c.id for c in cuts) == sorted(snr)
    for cut in cuts:
        assert cut.snr_db == snr[cut.id] and cut.speech_ratio == ratio[cut.id]
        assert "dur" not in cut.custom
        vector = cut.load_measures()  # the stage's vectors (<out>/measures.scp)
        assert vector.shape == (5,) and vector[4] == pytest.approx(snr[cut.id], abs=0.006)
