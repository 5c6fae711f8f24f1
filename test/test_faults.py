"""The faults a user can hit mid-stage and on bad data dirs (issue #6).

Mid-stage: a disk that fills (a small tmpfs, or a file size limit) and an audio file the job
may not read. Data dirs: duplicate, unsorted or disagreeing ids, odd ids, paths with spaces and
a text that is not UTF-8. The stage either refuses with a message saying what is wrong and
writes nothing, or works correctly; utils/fix_data_dir.sh repairs what it can. Kaldi fbank keeps
the jobs cheap; the steps under test are the shared ones of every stage (scripts/lib/).
"""

import ctypes
import json
import os
import pwd
import resource
import shutil
import subprocess
import tempfile
from pathlib import Path

import kaldiio
import numpy as np
import pytest

from conftest import REPO, SAMPLES, make_data_dir, read_pairs, run_feats_stage, run_stage

# Without utt2dur the split is by line count: job 1 gets the two 1.5 s LJSpeech utterances and
# job 2 the two 6-8 s VCTK ones, so job 2 writes about four times what job 1 does.
UNEQUAL = ["ljspeech-lj-002-0020", "ljspeech-lj-002-0035", "vctk-p225-003", "vctk-p226-008"]
BASE = ["arctic-aew-a0001", "ljspeech-lj-002-0020", "ljspeech-lj-002-0035"]


def run_fbank(args, env, check=True, **kwargs):
    """scripts/extract_ssl_feats.sh --toolkit fbank; the CompletedProcess (text, both streams)."""
    return run_feats_stage(["--toolkit", "fbank", *args], env, check=check, **kwargs)


def load(scp):
    return list(kaldiio.load_scp_sequential(str(scp)))


def write_lines(path, lines):
    """Writes lines (str or bytes) as a Kaldi table file, in the order given."""
    data = b"".join((line if isinstance(line, bytes) else line.encode("utf-8")) + b"\n"
                    for line in lines)
    path.write_bytes(data)


def rebuild_spk2utt(data):
    spk2utt = subprocess.run([str(REPO / "utils" / "utt2spk_to_spk2utt.pl"), str(data / "utt2spk")],
                             check=True, capture_output=True, text=True).stdout
    (data / "spk2utt").write_text(spk2utt)


# ------------------------------------------------------------------ disk full


@pytest.fixture(scope="module")
def unequal_jobs(tmp_path_factory, stage_env):
    """The UNEQUAL data dir and an uninterrupted two-job run of it: (data dir, its out dir)."""
    base = tmp_path_factory.mktemp("unequal")
    data = make_data_dir(base / "data", keep=set(UNEQUAL))
    os.remove(data / "utt2dur")
    run_fbank(["--nj", 2, data, base / "reference"], stage_env)
    return data, base / "reference"


def check_job_2_failed_writing(proc, out, reference, reason):
    """Job 2 could not write its ark: a clear error, nothing of job 2 left, job 1 kept intact."""
    split, ref_split = out / "split2", reference / "split2"
    assert proc.returncode != 0
    assert f"ERROR: job 2: cannot write {split}/feats.2.ark: {reason}" in proc.stderr
    assert "Traceback" not in (out / "log" / "extract.2.log").read_text()
    # No scp (final or partial) can point into a partial ark; the partial ark itself is removed,
    # which gives its space back.
    for name in ("feats.2.scp", "feats.2.scp.partial", "feats.2.ark", "done.2"):
        assert not (split / name).exists(), name
    assert not (out / "feats.scp").exists()
    for name in ("feats.1.ark", "utt2num_frames.1"):
        assert (split / name).read_bytes() == (ref_split / name).read_bytes(), name
    records = [json.loads((d / "done.1").read_text()) for d in (split, ref_split)]
    for record in records:
        # When it finished and what it read (the system's own reads count too): the fields of
        # a record that may differ.
        del record["finished"], record["bytes_read"]
    assert records[0] == records[1]
    ref_scp = (ref_split / "feats.1.scp").read_text().replace(str(ref_split), str(split))
    assert (split / "feats.1.scp").read_text() == ref_scp


def check_rerun_redoes_only_job_2(run, out, reference):
    """After space is freed, a rerun skips job 1 and ends with the uninterrupted run's output."""
    split = out / "split2"
    job1 = {name: ((split / name).read_bytes(), (split / name).stat().st_mtime_ns)
            for name in ("feats.1.ark", "feats.1.scp", "done.1")}
    run()
    assert "nothing to do" in (out / "log" / "extract.1.log").read_text()
    assert "nothing to do" not in (out / "log" / "extract.2.log").read_text()
    for name, (content, mtime) in job1.items():
        assert (split / name).read_bytes() == content and (split / name).stat().st_mtime_ns == mtime
    got, want = load(out / "feats.scp"), load(reference / "feats.scp")
    assert [k for k, _ in got] == [k for k, _ in want] == UNEQUAL
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(got, want))


def test_file_size_limit_fails_job_2_naming_its_ark_and_rerun_completes(
        tmp_path, stage_env, unequal_jobs):
    data, reference = unequal_jobs
    sizes = [(reference / "split2" / f"feats.{job}.ark").stat().st_size for job in (1, 2)]
    assert sizes[1] > 2 * sizes[0] > 100_000  # the limit below falls between the two arks
    limit = (sizes[0] + sizes[1]) // 2

    def limited():  # inherited by the stage and its jobs; Python ignores SIGXFSZ: EFBIG
        hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))

    out = tmp_path / "out"
    proc = run_fbank(["--nj", 2, data, out], stage_env, check=False, preexec_fn=limited)
    check_job_2_failed_writing(proc, out, reference, "[Errno 27] File too large")
    check_rerun_redoes_only_job_2(lambda: run_fbank(["--nj", 2, data, out], stage_env), out,
                                  reference)


@pytest.fixture
def tmpfs(tmp_path):
    """Mounts a tmpfs on a fresh dir; yields (dir, resize(bytes)); skips where mount is refused."""
    where = tmp_path / "tmpfs"
    where.mkdir()

    def mount(size, *options):
        return subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join([*options, f"size={size}"]),
                               "tmpfs", str(where)], capture_output=True, text=True)

    probe = mount(64 << 20)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({probe.stderr.strip() or probe.returncode}); "
                    "the file size limit test covers a full disk")
    try:
        def resize(size):
            proc = mount(size, "remount")
            assert proc.returncode == 0, proc.stderr
        yield where, resize
    finally:
        subprocess.run(["umount", str(where)], check=True)


def test_full_disk_fails_job_2_naming_its_ark_and_rerun_completes(tmpfs, stage_env, unequal_jobs):
    data, reference = unequal_jobs
    sizes = [(reference / "split2" / f"feats.{job}.ark").stat().st_size for job in (1, 2)]
    # Job 1's ark and its small files (logs, lists: ~15 pages) fit; half of job 2's ark does not.
    assert sizes[1] // 2 > 128 << 10
    out, resize = tmpfs
    resize(sizes[0] + sizes[1] // 2)
    # One job at a time, so that job 1 finishes before job 2 fills the disk.
    args = ["--cmd", "run.pl --max-jobs-run 1", "--nj", 2, data, out]
    proc = run_fbank(args, stage_env, check=False)
    check_job_2_failed_writing(proc, out, reference, "[Errno 28] No space left on device")

    def free_space_and_rerun():
        resize(64 << 20)
        run_fbank(args, stage_env)
    check_rerun_redoes_only_job_2(free_space_and_rerun, out, reference)


# ------------------------------------------------------------ unreadable audio


PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 24, 1, 2  # <linux/prctl.h>, capability.h


def drop_permission_override():
    """preexec_fn: root keeps its uid but loses, from the next exec on, the capabilities that
    let it ignore file permissions; the stage and its jobs then meet them as any user does."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def permission_bound_ways():
    """(what, subprocess options) under which file permissions apply: as is, or, for root,
    without the capabilities that override them, or as user nobody."""
    if os.geteuid() != 0:
        return [("this user", {})]
    ways = [("root without CAP_DAC_OVERRIDE", dict(preexec_fn=drop_permission_override))]
    try:
        nobody = pwd.getpwnam("nobody")
        ways.append(("user nobody", dict(user=nobody.pw_uid, group=nobody.pw_gid,
                                         extra_groups=[])))
    except KeyError:
        pass
    return ways


@pytest.fixture
def unreadable_audio(stage_env):
    """A data dir with one audio file without read permission, and how to run the stage so
    that permissions apply. Yields (work dir, data dir, utt id, its file, subprocess options).
    """
    # A work dir of its own that any user may use: pytest's tmp_path is root's only (0700).
    work = Path(tempfile.mkdtemp(prefix="speechdump-faults-"))
    try:
        os.chmod(work, 0o777)
        data = make_data_dir(work / "data", keep=set(BASE) | {"vctk-p238-165"})
        victim = work / "audio" / "vctk-p238-165.wav"
        victim.parent.mkdir()
        shutil.copy(SAMPLES / "audio" / victim.name, victim)
        write_lines(data / "wav.scp", [f"{key} {victim if key == 'vctk-p238-165' else value}"
                                       for key, value in read_pairs(data / "wav.scp")])
        os.chmod(victim, 0)
        # The first way in which the stage's python runs and is refused the file.
        probe = f"import speechdump; open({str(victim)!r}, 'rb')"
        failures = []
        for what, way in permission_bound_ways():
            try:
                proc = subprocess.run(["python3", "-c", probe], env=stage_env, cwd=work,
                                      capture_output=True, text=True, **way)
            except (OSError, subprocess.SubprocessError) as exc:
                failures.append(f"{what}: {exc}")
                continue
            if "PermissionError" in proc.stderr:
                yield work, data, "vctk-p238-165", victim, way
                return
            last = proc.stderr.strip().splitlines()[-1:]
            failures.append(f"{what}: {last[0] if last else 'read the file'}")
        pytest.skip("no way here to run the stage with file permissions applied ("
                    + "; ".join(failures) + ")")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_unreadable_audio_fails_naming_utterance_file_and_permission(unreadable_audio, stage_env):
    work, data, utt, victim, way = unreadable_audio
    env = dict(stage_env, HOME=str(work))  # caches of the run as user nobody, if any, go there
    proc = run_fbank(["--nj", 2, data, work / "out"], env, check=False, cwd=work, **way)
    assert proc.returncode != 0
    assert (f"ERROR: utterance '{utt}' ({victim}): cannot read audio: Permission denied"
            in proc.stderr)
    assert not (work / "out" / "feats.scp").exists()

    proc = run_fbank(["--nj", 2, "--skip_bad", "true", data, work / "skip"], env, cwd=work, **way)
    bad = dict(read_pairs(work / "skip" / "bad_utts"))
    assert bad == {utt: "cannot read audio: Permission denied"}
    assert [k for k, _ in load(work / "skip" / "feats.scp")] == BASE
    assert f"skipped 1 bad utterances: {utt}" in proc.stdout


# ----------------------------------------------------------------- data dirs


def edit(name, change):
    """A damage: ``change(lines)`` of one file of the data dir returns its new lines."""
    def damage(data):
        lines = (data / name).read_text(encoding="utf-8").splitlines()
        write_lines(data / name, change(lines))
    return damage


def add_utterance(utt, spk, files):
    """A damage: ``utt`` (audio of vctk-p238-165) added to some files only, in sorted place."""
    def damage(data):
        values = {"wav.scp": str(SAMPLES / "audio" / "vctk-p238-165.wav"), "utt2spk": spk}
        for name in files:
            if name == "spk2utt":
                rebuild_spk2utt(data)
                continue
            lines = (data / name).read_text().splitlines() + [f"{utt} {values[name]}"]
            write_lines(data / name, sorted(lines))
    return damage


def frames_of(seconds):
    return 1 + (round(seconds * 16000) - 400) // 160  # Kaldi fbank, 25 ms every 10 ms


REPAIRABLE = [
    # (name, damage, what validate_data_dir.sh says); utils/fix_data_dir.sh leaves BASE
    ("duplicate id", edit("wav.scp", lambda lines: lines + [
        f"ljspeech-lj-002-0035 {SAMPLES / 'audio' / 'jfk-inaugural1961.flac'}"]),
     "{data}/wav.scp has duplicate key 'ljspeech-lj-002-0035' (line 4)"),
    ("unsorted wav.scp", edit("wav.scp", lambda lines: lines[::-1]),
     "{data}/wav.scp is not sorted (LC_ALL=C): key 'ljspeech-lj-002-0020' on line 2 comes after "
     "'ljspeech-lj-002-0035'"),
    ("unsorted utt2spk", edit("utt2spk", lambda lines: lines[1:] + lines[:1]),
     "{data}/utt2spk is not sorted (LC_ALL=C): key 'arctic-aew-a0001' on line 3"),
    ("id only in wav.scp", add_utterance("vctk-p238-165", "vctk-p238", ["wav.scp"]),
     "utterance 'vctk-p238-165' is in {data}/wav.scp but not in {data}/utt2spk"),
    ("id only in utt2spk", add_utterance("vctk-p238-165", "vctk-p238", ["utt2spk", "spk2utt"]),
     "utterance 'vctk-p238-165' is in {data}/utt2spk but not in {data}/wav.scp"),
]


@pytest.mark.parametrize("name, damage, message", REPAIRABLE, ids=[case[0] for case in REPAIRABLE])
def test_bad_data_dir_is_refused_then_repaired_by_fix_data_dir(tmp_path, stage_env, name, damage,
                                                                message):
    data = make_data_dir(tmp_path / "data", keep=set(BASE))
    damage(data)
    out = tmp_path / "out"
    proc = run_fbank(["--nj", 2, data, out], stage_env, check=False)
    assert proc.returncode == 1
    assert f"validate_data_dir.sh: {message.format(data=data)}" in proc.stderr
    assert f"ERROR: {data} is not a valid data dir" in proc.stderr
    assert f"utils/fix_data_dir.sh {data}" in proc.stderr
    assert not out.exists()  # refused before writing anything

    fix = subprocess.run([str(REPO / "utils" / "fix_data_dir.sh"), str(data)], env=stage_env,
                         capture_output=True, text=True)
    assert fix.returncode == 0, fix.stderr
    run_fbank(["--nj", 2, data, out], stage_env)
    assert [k for k, _ in load(out / "feats.scp")] == BASE
    # Each id got its own audio (a duplicate's first entry): frame counts follow the durations.
    durations = dict(read_pairs(SAMPLES / "utt2dur"))
    assert dict(read_pairs(out / "utt2num_frames")) == {
        utt: str(frames_of(float(durations[utt]))) for utt in BASE}


def test_text_that_is_not_utf8_is_refused_naming_file_and_line(tmp_path, stage_env):
    data = make_data_dir(tmp_path / "data", keep=set(BASE))
    text = (data / "text").read_bytes().splitlines()
    text[1] = b"ljspeech-lj-002-0020 IN EIGHTEEN THIRTEEN caf\xe9"  # Latin-1
    write_lines(data / "text", text)
    out = tmp_path / "out"
    proc = run_fbank(["--nj", 2, data, out], stage_env, check=False)
    assert proc.returncode == 1
    assert (f"validate_data_dir.sh: {data}/text line 2 (utterance 'ljspeech-lj-002-0020') is not "
            "valid UTF-8") in proc.stderr
    assert not out.exists()


def test_ids_with_odd_characters_and_paths_with_spaces_work(tmp_path, stage_env):
    # Kaldi ids may hold any non-whitespace character; a wav.scp path is the rest of the line.
    # Through the speaker-embedding stage, so that speaker ids go through its means too.
    data = make_data_dir(tmp_path / "data", keep=set(BASE))
    spaced = tmp_path / "my recordings" / "lj 0035 copy.wav"
    spaced.parent.mkdir()
    shutil.copy(SAMPLES / "audio" / "ljspeech-lj-002-0035.wav", spaced)
    audio = SAMPLES / "audio"
    # new id -> (speaker, its audio, the utterance of BASE with the same audio)
    added = {"spk1-ütt": ("spk1", audio / "arctic-aew-a0001.wav", "arctic-aew-a0001"),
             "spk1-a.b_c+d:e=f,g@h%i~j": ("spk1", audio / "ljspeech-lj-002-0020.wav",
                                          "ljspeech-lj-002-0020"),
             "spkß-spaced": ("spkß", spaced, "ljspeech-lj-002-0035")}
    for name, value in (("wav.scp", lambda a: a[1]), ("utt2spk", lambda a: a[0]),
                        ("text", lambda a: "SOME TEXT")):
        lines = (data / name).read_text().splitlines()
        lines += [f"{utt} {value(about)}" for utt, about in added.items()]
        write_lines(data / name, sorted(lines, key=lambda line: line.split(" ")[0].encode()))
    os.remove(data / "utt2dur")
    rebuild_spk2utt(data)
    out = tmp_path / "out"
    run_stage(["--nj", 2, data, out], stage_env)
    got = dict(load(out / "resemblyzer.scp"))
    assert list(got) == [line.split(" ")[0] for line in (data / "text").read_text().splitlines()]
    for utt, (_, _, same_audio) in added.items():
        np.testing.assert_allclose(got[utt], got[same_audio], atol=1e-6, err_msg=utt)
    speakers = [k for k, _ in load(out / "spk_resemblyzer.scp")]
    assert speakers == ["arctic-aew", "ljspeech-lj", "spk1", "spkß"]
