"""Audio that is not all there: segments past the end of their recording, truncated files.

A segment may end past its recording by up to --max_overshoot seconds (0.5, Kaldi's
extract-segments): it is clipped there, with a line in the job log. Further, or a file whose
header promises more than it holds, is a bad utterance, named (and listed with --skip_bad true).
"""

import kaldiio
import numpy as np
import pytest
import soundfile

from conftest import SAMPLES, read_pairs, run_feats_stage
from speechdump.audio import ResamplerCache, load_audio, read_samples, wav_declared_frames
from speechdump.data import Utterance
from speechdump.errors import UtteranceError

JFK = SAMPLES / "audio" / "jfk-inaugural1961.flac"  # 11.00 s, 44.1 kHz stereo
ARCTIC = SAMPLES / "audio" / "arctic-aew-a0002.wav"


def truncated_wav(dest):
    """A real WAV cut to 30 % of its bytes: its header still declares the whole recording."""
    data = ARCTIC.read_bytes()
    dest.write_bytes(data[:int(len(data) * 0.3)])
    return dest


def test_a_truncated_wav_is_an_error_naming_what_its_header_declares(tmp_path):
    path = truncated_wav(tmp_path / "cut.wav")
    with soundfile.SoundFile(ARCTIC) as f:
        full = f.frames
    assert wav_declared_frames(str(path)) == full == wav_declared_frames(str(ARCTIC))
    utt = Utterance("cut", str(path))
    with pytest.raises(UtteranceError, match=rf"utterance 'cut' \({path}\): cannot read audio: "
                                             rf"truncated: the WAV header declares {full} frames"):
        load_audio(utt, 16000, ResamplerCache())
    whole, _ = read_samples(Utterance("whole", str(ARCTIC)))
    assert len(whole) == full  # an intact file reads as before


def test_segments_past_the_end_are_clipped_within_the_tolerance_and_refused_beyond(caplog):
    total = 485100  # frames of the jfk recording at 44.1 kHz
    clipped, rate = read_samples(Utterance("jfk-003", str(JFK), 9.0, 11.2))
    assert rate == 44100 and len(clipped) == total - 9 * 44100
    assert "jfk-003: the segment ends 0.200 s past the end of the recording" in caplog.text
    with pytest.raises(ValueError, match=r"the segment ends at 99.00 s, 88.00 s past the end of "
                                         r"the recording \(11.00 s; at most 0.5 s is clipped\)"):
        read_samples(Utterance("jfk-002", str(JFK), 7.2, 99.0))
    with pytest.raises(ValueError, match="at most 0.1 s"):
        read_samples(Utterance("jfk-003", str(JFK), 9.0, 11.2), max_overshoot=0.1)
    with pytest.raises(ValueError, match="starts at 12.00 s, after the recording ends"):
        read_samples(Utterance("jfk-004", str(JFK), 12.0, 13.0))


@pytest.fixture
def overshooting_data_dir(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    cut = truncated_wav(tmp_path / "cut.wav")
    (data / "wav.scp").write_text(f"arctic {ARCTIC}\ncut {cut}\njfk {JFK}\n")
    segments = {"arctic-000": "arctic 0.00 1.50", "cut-000": "cut 0.00 1.00",
                "jfk-001": "jfk 0.00 3.00", "jfk-002": "jfk 7.20 99.00",
                "jfk-003": "jfk 9.00 11.20"}
    (data / "segments").write_text("".join(f"{u} {s}\n" for u, s in segments.items()))
    (data / "utt2spk").write_text("".join(f"{u} {u.split('-')[0]}\n" for u in segments))
    (data / "spk2utt").write_text("arctic arctic-000\ncut cut-000\njfk jfk-001 jfk-002 jfk-003\n")
    return data


def test_the_stage_refuses_then_lists_them_with_skip_bad(overshooting_data_dir, tmp_path,
                                                         stage_env):
    data = overshooting_data_dir
    proc = run_feats_stage(["--toolkit", "fbank", "--nj", 1, data, tmp_path / "strict"],
                           stage_env, check=False)
    assert proc.returncode == 1
    assert "utterance 'cut-000'" in proc.stderr and "truncated" in proc.stderr

    out = tmp_path / "lenient"
    proc = run_feats_stage(["--toolkit", "fbank", "--skip_bad", "true", "--nj", 2, data, out],
                           stage_env)
    bad = dict(read_pairs(out / "bad_utts"))
    assert sorted(bad) == ["cut-000", "jfk-002"]
    assert "truncated: the WAV header declares" in bad["cut-000"]
    assert "88.00 s past the end of the recording" in bad["jfk-002"]
    assert "skipped 2 bad utterances" in proc.stdout
    feats = dict(kaldiio.load_scp_sequential(str(out / "feats.scp")))
    assert list(feats) == ["arctic-000", "jfk-001", "jfk-003"]
    logs = "".join(p.read_text() for p in (out / "log").glob("extract.*.log"))
    assert "jfk-003: the segment ends 0.200 s past the end of the recording" in logs
    # utt2dur holds what was read: the clipped segment is 2.00 s, not the 2.20 s it asked for.
    durations = {utt: float(seconds) for utt, seconds in read_pairs(out / "utt2dur")}
    assert durations["jfk-003"] == pytest.approx(2.0, abs=1e-3)
    assert feats["jfk-003"].shape[0] == 1 + (32000 - 400) // 160
    # The clipped segment is the recording's last 2 s, as a segment ending at 11.00 s gives.
    exact = run_feats_stage(["--toolkit", "fbank", "--nj", 1, _one_segment(data, tmp_path),
                             tmp_path / "exact"], stage_env)
    assert exact.returncode == 0
    (_, reference), = kaldiio.load_scp_sequential(str(tmp_path / "exact" / "feats.scp"))
    assert np.array_equal(feats["jfk-003"], reference)


def _one_segment(data, tmp_path):
    one = tmp_path / "one"
    one.mkdir()
    (one / "wav.scp").write_text(f"jfk {JFK}\n")
    (one / "segments").write_text("jfk-003 jfk 9.00 11.00\n")
    (one / "utt2spk").write_text("jfk-003 jfk\n")
    (one / "spk2utt").write_text("jfk jfk-003\n")
    return one
