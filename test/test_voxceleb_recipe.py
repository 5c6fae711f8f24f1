"""egs/voxceleb/spk1: local/data.sh on a small fake VoxCeleb1 (real speech from samples/real_speech
written as 16 kHz 16-bit WAV in VoxCeleb1's layout, with the three cleaned trial lists in VoxCeleb
form naming its files) and VoxCeleb2 dev, its refusals, and the recipe end to end (stages 1-5).

VoxCeleb2's m4a files are decoded by ffmpeg pipes in wav.scp. Where ffmpeg is installed, the fake
VoxCeleb2 holds real AAC m4a files made with it. Where it is not (as on the machine these tests
were written on), the fake .m4a files hold WAV bytes and a stand-in ``ffmpeg`` on PATH checks that
it is called with exactly the options data.sh writes and prints the file as a streamed WAV; so
the pipe entries, the cohort and AS-norm are tested end to end, but decoding real m4a is not."""

import shutil
import subprocess
import sys
from pathlib import Path

import kaldiio
import numpy as np
import pytest

from conftest import REPO, read_pairs
from test_corpus_recipes import lines, validate, write, write_audio

RECIPE = REPO / "egs" / "voxceleb" / "spk1"

# <spk>/<youtube id>/<nnnnn>.wav -> sample recording. id10270 is a VoxCeleb1 test speaker; YouTube
# ids may hold '-' and '_'.
VOX1 = {"id10001/1zcIwhmdeo4/00001.wav": "arctic-aew-a0001.wav",
        "id10001/1zcIwhmdeo4/00002.wav": "arctic-aew-a0002.wav",
        "id10001/7gWzIy6yIIk/00001.wav": "arctic-aew-a0003.wav",
        "id10002/C-_3ki8nHxk/00001.wav": "ls-1688-142285-0003.flac",
        "id10002/Zk1p7Jj-6gU/00004.wav": "ls-1688-142285-0006.flac",
        "id10003/0cXN2E3Pwgk/00001.wav": "vctk-p225-003.wav",
        "id10003/0cXN2E3Pwgk/00002.wav": "vctk-p225-008.wav",
        "id10270/5r0dWxy17C8/00001.wav": "ls-1998-15444-0001.flac",
        "id10270/x6uYqmx31kE/00001.wav": "ls-1998-15444-0003.flac",
        "id10270/x6uYqmx31kE/00002.wav": "ls-1998-15444-0009.flac"}
VOX2 = {"id00012/21Uxsk56VDQ/00001.m4a": "vctk-p226-003.wav",
        "id00012/21Uxsk56VDQ/00002.m4a": "vctk-p226-008.wav",
        "id00012/2DLq_Kkc1r8/00001.m4a": "vctk-p226-011.wav",
        "id00015/0fijmz4vTVU/00001.m4a": "vctk-p238-165.wav",
        "id00017/-1Ab_xyz123/00003.m4a": "vctk-p301-102.wav",
        "id00019/01dfn2spqyE/00001.m4a": "vctk-p314-272.wav",
        "id00020/0sCJ8J0ul2g/00001.m4a": "ljspeech-lj-002-0020.wav"}
PIPE = "ffmpeg -nostdin -loglevel error -i {} -f wav -ac 1 -ar 16000 - |"
LIST_FILES = {"O": "veri_test2.txt", "E": "list_test_all2.txt", "H": "list_test_hard2.txt"}


def utt_id(rel: str) -> str:
    return rel.rsplit(".", 1)[0].replace("/", "-")


def make_trials():
    """VoxCeleb-form lists: E every two files of different videos, O those of id10270 against
    all, H those of E where both ids are odd-numbered or both even (targets and non-targets in
    each)."""
    files = sorted(VOX1)
    pairs = [(a, b) for i, a in enumerate(files) for b in files[i + 1:]
             if a.rsplit("/", 1)[0] != b.rsplit("/", 1)[0]]
    row = {p: f"{int(p[0][:7] == p[1][:7])} {p[0]} {p[1]}" for p in pairs}
    e = [row[p] for p in pairs]
    o = [row[p] for p in pairs if "id10270" in (p[0][:7], p[1][:7])]
    h = [row[p] for p in pairs if int(p[0][6]) % 2 == int(p[1][6]) % 2]
    return {"O": o, "E": e, "H": h}


TRIALS = make_trials()


def make_vox1(root: Path, split: bool = False) -> Path:
    """wav/ (or dev/wav/ and test/wav/ with id10270 in test), O's list in the top directory and
    E's and H's in meta/, as WeSpeaker's and the VoxCeleb site's downloads leave them."""
    for rel, sample in VOX1.items():
        part = ("test/wav" if rel.startswith("id10270") else "dev/wav") if split else "wav"
        write_audio(root / part / rel, sample, 16000, "WAV")
    write(root / LIST_FILES["O"], lines(*TRIALS["O"]))
    for t in "EH":
        write(root / "meta" / LIST_FILES[t], lines(*TRIALS[t]))
    return root


def make_vox2(root: Path, m4a: bool) -> Path:
    """dev/aac/<spk>/<yt>/<nnnnn>.m4a: real AAC (ffmpeg) or WAV bytes for the stand-in."""
    for rel, sample in VOX2.items():
        path = root / "dev" / "aac" / rel
        if m4a:
            wav = write_audio(path.with_suffix(".src.wav"), sample, 16000, "WAV")
            subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(wav), "-c:a",
                            "aac", str(path)], check=True)
            wav.unlink()
        else:
            write_audio(path.with_suffix(".wav"), sample, 16000, "WAV").rename(path)
    return root


FAKE_FFMPEG = '''#!{python}
"""Stand-in for ffmpeg (test/test_voxceleb_recipe.py): prints the WAV bytes of a fake .m4a
file as a streamed WAV (RIFF and data sizes unknown), after checking its options."""
import io
import sys

import soundfile

args = sys.argv[1:]
want = {want!r}
if len(args) != len(want) or any(w is not None and a != w for a, w in zip(args, want)):
    sys.exit("fake ffmpeg: unexpected options " + " ".join(args))
with open(args[4], "rb") as f:
    samples, rate = soundfile.read(f, dtype="int16")
if rate != 16000 or samples.ndim != 1:
    sys.exit("fake ffmpeg: expected 16 kHz mono")
buf = io.BytesIO()
soundfile.write(buf, samples, rate, format="WAV", subtype="PCM_16")
out = bytearray(buf.getvalue())
data = out.index(b"data")
out[4:8] = out[data + 4:data + 8] = b"\\xff\\xff\\xff\\xff"
sys.stdout.buffer.write(bytes(out))
'''


@pytest.fixture(scope="module")
def real_ffmpeg():
    return shutil.which("ffmpeg") is not None


@pytest.fixture(scope="module")
def vox1(tmp_path_factory):
    return make_vox1(tmp_path_factory.mktemp("vox") / "voxceleb1")


@pytest.fixture(scope="module")
def vox2(tmp_path_factory, real_ffmpeg):
    return make_vox2(tmp_path_factory.mktemp("vox") / "voxceleb2", m4a=real_ffmpeg)


@pytest.fixture(scope="module")
def ffmpeg_env(tmp_path_factory, stage_env, real_ffmpeg):
    """stage_env, with the stand-in ffmpeg first on PATH where there is no real one."""
    if real_ffmpeg:
        return stage_env
    bin_dir = tmp_path_factory.mktemp("fake_ffmpeg_bin")
    want = ["-nostdin", "-loglevel", "error", "-i", None, "-f", "wav", "-ac", "1", "-ar",
            "16000", "-"]
    (bin_dir / "ffmpeg").write_text(FAKE_FFMPEG.format(python=sys.executable, want=want))
    (bin_dir / "ffmpeg").chmod(0o755)
    return {**stage_env, "PATH": f"{bin_dir}:{stage_env['PATH']}"}


def data_sh(args, env, check=True):
    proc = subprocess.run(["local/data.sh", *map(str, args)], cwd=RECIPE, env=env,
                          capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"data.sh failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def spk2utt(ids):
    by_spk = {}
    for utt in ids:
        by_spk.setdefault(utt[:7], []).append(utt)
    return [f"{s} {' '.join(u)}" for s, u in sorted(by_spk.items())]


def check_vox1(data: Path, corpus: Path, env, split: bool = False, lists="OEH") -> None:
    def path(rel):
        part = ("test/wav" if rel.startswith("id10270") else "dev/wav") if split else "wav"
        return corpus / part / rel
    rels = sorted(VOX1)
    ids = [utt_id(r) for r in rels]
    assert ids == sorted(ids) and ids[0] == "id10001-1zcIwhmdeo4-00001"
    assert (data / "wav.scp").read_text() == lines(*(f"{u} {path(r)}" for u, r in zip(ids, rels)))
    assert (data / "utt2spk").read_text() == lines(*(f"{u} {u[:7]}" for u in ids))
    assert (data / "spk2utt").read_text() == lines(*spk2utt(ids))
    assert not (data / "text").exists()
    assert sorted(p.name for p in (data / "trials").iterdir()) == sorted(f"vox1_{t}" for t in lists)
    for t in lists:
        assert (data / "trials" / f"vox1_{t}").read_text() == lines(*TRIALS[t])
    validate(data, env)


def test_trial_lists_have_both_kinds():
    for rows in TRIALS.values():
        assert {r[0] for r in rows} == {"0", "1"}


def test_vox1(vox1, tmp_path, stage_env):
    proc = data_sh(["--vox1", vox1, tmp_path], stage_env)
    check_vox1(tmp_path / "vox1", vox1, stage_env)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vox1"]  # no vox2_dev without --vox2
    n_o = sum(r.startswith("1") for r in TRIALS["O"])
    assert (f"vox1_O: VoxCeleb1-O cleaned from {vox1}/veri_test2.txt ({n_o} target, "
            f"{len(TRIALS['O']) - n_o} non-target trials)") in proc.stdout
    assert f"from {vox1}/meta/list_test_hard2.txt" in proc.stdout


def test_vox1_dev_test_layout(tmp_path, stage_env):
    corpus = make_vox1(tmp_path / "vox1", split=True)
    data_sh(["--vox1", corpus, tmp_path / "data"], stage_env)
    check_vox1(tmp_path / "data" / "vox1", corpus, stage_env, split=True)


def test_vox2_cohort(vox1, vox2, tmp_path, ffmpeg_env):
    proc = data_sh(["--vox1", vox1, "--vox2", vox2, "--cohort_per_speaker", "2", tmp_path],
                   ffmpeg_env)
    check_vox1(tmp_path / "vox1", vox1, ffmpeg_env)
    kept = [r for r in sorted(VOX2) if r != "id00012/2DLq_Kkc1r8/00001.m4a"]  # 3rd of id00012
    ids = [utt_id(r) for r in kept]
    data = tmp_path / "vox2_dev"
    assert (data / "wav.scp").read_text() == lines(
        *(f"{u} {PIPE.format(vox2 / 'dev' / 'aac' / r)}" for u, r in zip(ids, kept)))
    assert (data / "utt2spk").read_text() == lines(*(f"{u} {u[:7]}" for u in ids))
    assert (data / "spk2utt").read_text() == lines(*spk2utt(ids))
    assert "6 recordings, 5 speakers" in proc.stdout
    validate(data, ffmpeg_env)
    # the default keeps 5 per speaker: all 7 here; and the aac/ layout is accepted
    (vox2 / "dev").rename(vox2 / "flat")
    try:
        data_sh(["--vox1", vox1, "--trials", "O", "--vox2", vox2 / "flat", tmp_path], ffmpeg_env)
    finally:
        (vox2 / "flat").rename(vox2 / "dev")
    assert len((data / "wav.scp").read_text().splitlines()) == len(VOX2)


def test_vox2_needs_ffmpeg(vox1, vox2, tmp_path, stage_env):
    if shutil.which("ffmpeg", path=stage_env["PATH"]):
        pytest.skip("ffmpeg is installed: its absence cannot be tested")
    proc = data_sh(["--vox1", vox1, "--vox2", vox2, tmp_path], stage_env, check=False)
    assert proc.returncode == 1
    assert "ffmpeg is not on PATH" in proc.stderr and "soundfile cannot read m4a" in proc.stderr
    assert not (tmp_path / "vox1").exists()  # refused before anything is written


def test_missing_trial_list(vox1, tmp_path, stage_env):
    hard = vox1 / "meta" / LIST_FILES["H"]
    saved = hard.read_bytes()
    hard.unlink()
    try:
        proc = data_sh(["--vox1", vox1, tmp_path], stage_env, check=False)
        assert proc.returncode == 1
        assert (f"trial list list_test_hard2.txt (VoxCeleb1-H cleaned) is in neither {vox1}/ "
                f"nor {vox1}/meta/") in proc.stderr
        assert "https://mm.kaist.ac.kr/datasets/voxceleb/meta/list_test_hard2.txt" in proc.stderr
        assert "https://www.robots.ox.ac.uk/~vgg/data/voxceleb/" in proc.stderr
        assert "--trials O" in proc.stderr
        assert not (tmp_path / "vox1").exists()
        data_sh(["--vox1", vox1, "--trials", "O,E", tmp_path], stage_env)  # the lists one has
        check_vox1(tmp_path / "vox1", vox1, stage_env, lists="OE")
    finally:
        hard.write_bytes(saved)
    proc = data_sh(["--vox1", vox1, "--trials", "O,X", tmp_path], stage_env, check=False)
    assert proc.returncode == 1 and "--trials: unknown list 'X'" in proc.stderr


def test_trial_path_without_a_file(tmp_path, stage_env):
    corpus = make_vox1(tmp_path / "vox1")
    missing = ["id10270/x6uYqmx31kE/00009.wav", "id10999/abc/00001.wav"]
    write(corpus / "meta" / LIST_FILES["E"], lines(
        *TRIALS["E"][:3], f"1 {TRIALS['E'][0].split()[1]} {missing[0]}", f"0 {missing[1]} "
        f"{missing[0]}"))
    proc = data_sh(["--vox1", corpus, tmp_path / "data"], stage_env, check=False)
    assert proc.returncode == 1
    assert (f"2 paths of {corpus}/meta/list_test_all2.txt are not files under {corpus}/wav; "
            f"the first: {' '.join(missing)}") in proc.stderr
    # Windows line endings are read (and the list copied as it is)
    crlf = "".join(f"{row}\r\n" for row in TRIALS["E"])
    write(corpus / "meta" / LIST_FILES["E"], crlf)
    data_sh(["--vox1", corpus, tmp_path / "data"], stage_env)
    assert (tmp_path / "data" / "vox1" / "trials" / "vox1_E").read_bytes() == crlf.encode()
    write(corpus / "meta" / LIST_FILES["E"], lines(TRIALS["E"][0], "target a.wav b.wav"))
    proc = data_sh(["--vox1", corpus, tmp_path / "data"], stage_env, check=False)
    assert proc.returncode == 1
    assert 'list_test_all2.txt:2: "target a.wav b.wav" is not a VoxCeleb trial' in proc.stderr


def test_usage_and_missing_corpora(vox1, tmp_path, stage_env):
    proc = data_sh([], stage_env, check=False)
    assert proc.returncode == 1 and "Usage:" in proc.stderr and "--vox1" in proc.stderr
    missing = tmp_path / "no-such-corpus"
    proc = data_sh(["--vox1", missing, tmp_path / "data"], stage_env, check=False)
    assert proc.returncode == 1
    assert f"VoxCeleb1 directory '{missing}' does not exist" in proc.stderr
    proc = data_sh(["--vox1", tmp_path, tmp_path / "data"], stage_env, check=False)
    assert proc.returncode == 1 and "has neither wav/ nor dev/wav/ or test/wav/" in proc.stderr
    proc = data_sh(["--vox1", vox1, "--vox2", missing, tmp_path / "data"], stage_env,
                   check=False)
    assert proc.returncode == 1
    assert f"VoxCeleb2 directory '{missing}' does not exist" in proc.stderr
    proc = data_sh(["--vox1", vox1, "--cohort_per_speaker", "0", tmp_path / "data"], stage_env,
                   check=False)
    assert proc.returncode == 1 and "--cohort_per_speaker must be a positive" in proc.stderr
    env = {k: v for k, v in stage_env.items() if not k.startswith("VOXCELEB")}
    proc = subprocess.run(["./run.sh", "--datadir", str(tmp_path / "data")], cwd=RECIPE, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "VoxCeleb1 directory '/path/to/voxceleb1' does not exist" in proc.stderr


def read_results(path: Path) -> dict:
    return dict(read_pairs(path))


def test_end_to_end(vox1, vox2, tmp_path, ffmpeg_env):
    """Stages 1-5 with --nj 2: both sets embedded (the cohort through the ffmpeg pipes), every
    list scored raw and AS-normalised, the report (stage 4) drawn; then
    stage 5 alone without VoxCeleb2 scores raw only, and with --mean_scp less the cohort mean."""
    env = {**ffmpeg_env, "VOXCELEB1": str(vox1), "VOXCELEB2": str(vox2)}
    data, dump = tmp_path / "data", tmp_path / "dump"
    cmd = ["./run.sh", "--nj", "2", "--datadir", str(data), "--dumpdir", str(dump)]
    # five cohort speakers here, not VoxCeleb2's 5994: a later --score_opts wins
    proc = subprocess.run(cmd + ["--score_opts", "--top_n 3"], cwd=RECIPE, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = dump / "resemblyzer"
    vox1_ids = [k for k, _ in kaldiio.load_scp_sequential(str(out / "vox1" / "resemblyzer.scp"))]
    assert vox1_ids == [utt_id(r) for r in sorted(VOX1)]
    cohort = dict(kaldiio.load_scp_sequential(str(out / "vox2_dev" / "spk_resemblyzer.scp")))
    assert sorted(cohort) == sorted({r[:7] for r in VOX2})
    assert all(v.shape == (256,) and np.isfinite(v).all() for v in cohort.values())
    for t in "OEH":
        for norm in ("none", "asnorm"):
            scored = out / "vox1" / "scores" / f"vox1_{t}.{norm}"
            results = read_results(scored / "results")
            assert 0 <= float(results["EER"]) <= 100, results
            rows = (scored / "scores").read_text().splitlines()
            assert len(rows) == len(TRIALS[t])
            first = TRIALS[t][0].split()
            assert rows[0].split()[:2] == [utt_id(first[1]), utt_id(first[2])]
            assert (scored / "det.png").stat().st_size > 1000
    none = (out / "vox1" / "scores" / "vox1_E.none" / "scores").read_text()
    asnorm = (out / "vox1" / "scores" / "vox1_E.asnorm" / "scores").read_text()
    assert none != asnorm
    assert (out / "vox1" / "report" / "resemblyzer.png").stat().st_size > 10_000

    env.pop("VOXCELEB2")
    proc = subprocess.run(cmd + ["--stage", "5"], cwd=RECIPE, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for t in "OEH":
        raw = out / "vox1" / "scores" / f"vox1_{t}"
        assert "EER" in read_results(raw / "results")
        assert (raw / "scores").read_text() == \
            (out / "vox1" / "scores" / f"vox1_{t}.none" / "scores").read_text()

    # WeSpeaker's scoring subtracts the vox2_dev mean first: through --score_opts (README)
    env["VOXCELEB2"] = str(vox2)
    mean = out / "vox2_dev" / "resemblyzer.scp"
    proc = subprocess.run(cmd + ["--stage", "5", "--score_opts", f"--top_n 3 --mean_scp {mean}"],
                          cwd=RECIPE, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (out / "vox1" / "scores" / "vox1_E.none" / "scores").read_text() != none
    assert "EER" in read_results(out / "vox1" / "scores" / "vox1_E.asnorm" / "results")


def test_run_sh_trial_lists_from_environment(vox1, tmp_path, stage_env):
    """VOXCELEB_TRIALS (spaces or commas) reaches local/data.sh's --trials through spk.sh."""
    env = {**stage_env, "VOXCELEB1": str(vox1), "VOXCELEB_TRIALS": "O H"}
    proc = subprocess.run(["./run.sh", "--stop_stage", "1", "--datadir", str(tmp_path)],
                          cwd=RECIPE, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    check_vox1(tmp_path / "vox1", vox1, stage_env, lists="OH")
