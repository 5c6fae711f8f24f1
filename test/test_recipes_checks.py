"""The recipes and stages as a user drives them (issue 15, item 5), on the real speech samples:
the report of a single-speaker corpus, stage 4 before stage 3, stage numbers out of range,
each recipe's --help, config files read like the command line, and an out dir that two stages
would share."""

import subprocess

import kaldiio
import pytest

from conftest import REPO, make_data_dir, run_feats_stage, run_stage

EGS = REPO / "egs" / "sample_speakers"
LJSPEECH = ["ljspeech-lj-002-0020", "ljspeech-lj-002-0035"]
BASE = ["arctic-aew-a0001", *LJSPEECH]


def recipe(name, args, env, timeout=600):
    return subprocess.run(["./run.sh", *map(str, args)], cwd=EGS / name, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_report_of_a_single_speaker_set(tmp_path, stage_env):
    """A single-speaker TTS corpus (LJSpeech): the statistics that exist, why there is no EER,
    and the figure."""
    make_data_dir(tmp_path / "data" / "sample", keep=set(LJSPEECH))
    dump = tmp_path / "dump"
    proc = recipe("spk1", ["--stage", 2, "--stop_stage", 4, "--sets", "sample", "--datadir",
                           tmp_path / "data", "--dumpdir", dump], stage_env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert "utterances: 2  speakers: 1\n" in proc.stdout
    assert "EER: not computed: EER needs two speakers or more; this set has 1 (2 utterances)" \
        in proc.stdout
    assert "same-speaker cosine:      mean " in proc.stdout and "(1 pairs)" in proc.stdout
    assert "different-speaker cosine: no pairs (one speaker)" in proc.stdout
    report = dump / "resemblyzer" / "sample" / "report"
    assert "EER: not computed" in (report / "resemblyzer.txt").read_text()
    assert (report / "resemblyzer.png").read_bytes()[:4] == b"\x89PNG"


def test_report_before_stage_3_says_to_run_it(tmp_path, stage_env):
    make_data_dir(tmp_path / "data" / "sample", keep=set(BASE))
    dump = tmp_path / "dump"
    proc = recipe("spk1", ["--stage", 4, "--stop_stage", 4, "--sets", "sample", "--datadir",
                           tmp_path / "data", "--dumpdir", dump], stage_env)
    assert proc.returncode == 1
    assert (f"ERROR: {dump}/resemblyzer/sample/resemblyzer.scp is missing: run stage 3 first "
            "(./run.sh --stage 3,") in proc.stderr
    assert "Traceback" not in proc.stderr
    # The report's own script says the same, for those who call it directly.
    proc = subprocess.run(["python3", "pyscripts/spk_report.py", f"{dump}/x.scp",
                           f"{dump}/spk_x.scp", f"{tmp_path}/data/sample/utt2spk",
                           f"{dump}/report/x"], cwd=REPO, env=stage_env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr == (f"ERROR: {dump}/x.scp does not exist (it is written by "
                           "scripts/extract_spk_embed.sh: run stage 3 first)\n")


@pytest.mark.parametrize("name, args, message", [
    ("spk1", ["--stage", 6], "ERROR: --stage 6: this recipe has stages 1 to 5"),
    ("spk1", ["--stage", 0], "ERROR: --stage 0: this recipe has stages 1 to 5"),
    ("spk1", ["--score_set", "dev"], "ERROR: --score_set and --cohort_set must be among --sets "
     "(sample sample_pieces sample_cohort); dev is not"),
    ("spk1", ["--score_set", ""], "ERROR: --cohort_set sample_cohort needs --score_set"),
    ("tok1", ["--stage", 6], "ERROR: --stage 6: this recipe has stages 1 to 5"),
    ("ssl1", ["--stage", 4], "ERROR: --stage 4: this recipe has stages 1 to 3"),
    ("tok1", ["--stage", "three"], "ERROR: --stage must be a stage number, got 'three'"),
    ("spk1", ["--stage", 3, "--stop_stage", 2],
     "ERROR: --stop_stage 2 is before --stage 3: no stage would run"),
])
def test_stage_out_of_range_is_an_error(tmp_path, stage_env, name, args, message):
    proc = recipe(name, [*args, "--datadir", tmp_path / "data", "--dumpdir", tmp_path / "dump"],
                  stage_env)
    assert proc.returncode == 1
    assert message in proc.stderr
    assert not (tmp_path / "data").exists() and not (tmp_path / "dump").exists()


def test_scoring_without_trial_lists_or_embeddings_says_what_is_missing(tmp_path, stage_env):
    """Stage 5 alone: first the trial lists local/data.sh writes, then stage 3's embeddings."""
    data, dump = tmp_path / "data", tmp_path / "dump"
    make_data_dir(data / "sample_pieces", keep=set(BASE))
    args = ["--stage", 5, "--datadir", data, "--dumpdir", dump]
    proc = recipe("spk1", args, stage_env)
    assert proc.returncode == 1
    assert f"ERROR: no trial lists in {data}/sample_pieces/trials/ (local/data.sh writes them)" \
        in proc.stderr
    (data / "sample_pieces" / "trials").mkdir()
    (data / "sample_pieces" / "trials" / "pairs").write_text(f"{BASE[0]} {BASE[1]} nontarget\n")
    proc = recipe("spk1", args, stage_env)
    assert proc.returncode == 1
    assert (f"ERROR: {dump}/resemblyzer/sample_pieces/resemblyzer.scp is missing: run stage 3 "
            "first") in proc.stderr
    assert not dump.exists()


def stage_lines(text):
    return [line.strip() for line in text.splitlines() if line[:4].strip().rstrip(":").isdigit()]


def test_each_recipe_help_lists_its_own_stages(stage_env):
    helps = {}
    for name in ("spk1", "ssl1", "tok1"):
        proc = recipe(name, ["--help"], stage_env)
        assert proc.returncode == 0 and proc.stdout == ""
        helps[name] = stage_lines(proc.stderr)
    assert [line[:2] for line in helps["spk1"]] == ["1:", "2:", "3:", "4:", "5:"]
    assert helps["spk1"][3].startswith("4: report")
    assert helps["spk1"][4].startswith("5: with --score_set: each trial list")
    assert [line[:2] for line in helps["ssl1"]] == ["1:", "2:", "3:"]
    assert helps["ssl1"][2].startswith("3: features")
    assert [line[:2] for line in helps["tok1"]] == ["1:", "2:", "3:", "4:", "5:"]
    assert helps["tok1"][3].startswith("4: k-means")
    # ssl1's help shows its own defaults (those its run.sh gives the template).
    proc = recipe("ssl1", ["--help"], stage_env)
    assert "--toolkit <ssl>" in proc.stderr and "--n_clusters" not in proc.stderr


def write_conf(path, *lines):
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def test_config_files_are_read_like_the_command_line(tmp_path, stage_env):
    data = make_data_dir(tmp_path / "data", keep=set(BASE))
    out = tmp_path / "out"
    # A typo: an error naming the file and line, before anything is written.
    conf = write_conf(tmp_path / "typo.conf", "# speaker embeddings", "batch_second=30")
    proc = run_stage(["--config", conf, data, out], stage_env, check=False)
    assert proc.returncode == 1
    assert proc.stderr == (f"parse_options.sh: {conf} line 2: invalid option batch_second "
                           "(extract_spk_embed.sh has no such option; --help lists them)\n")
    # A Kaldi-style line of an option the stage does not have: the same, not "command not found".
    conf = write_conf(tmp_path / "kaldi.conf", "--num-mel-bins=40")
    proc = run_feats_stage(["--toolkit", "fbank", "--config", conf, data, out], stage_env,
                           check=False)
    assert proc.returncode == 1
    assert proc.stderr == (f"parse_options.sh: {conf} line 1: invalid option --num-mel-bins "
                           "(extract_ssl_feats.sh has no such option; --help lists them)\n")
    # A malformed line and a value that would need the shell.
    conf = write_conf(tmp_path / "bad.conf", "nj 2")
    proc = run_stage(["--config", conf, data, out], stage_env, check=False)
    assert proc.returncode == 1 and f"{conf} line 1: expected --name=value or name=value, " \
        "got 'nj 2'" in proc.stderr
    conf = write_conf(tmp_path / "shell.conf", "tag=$USER")
    proc = run_stage(["--config", conf, data, out], stage_env, check=False)
    assert proc.returncode == 1 and f"{conf} line 1: the value of tag ('$USER') would need " \
        "the shell" in proc.stderr
    assert not out.exists()
    # Both styles, comments, blank lines and quoted values; the command line wins.
    conf = write_conf(tmp_path / "good.conf", "# Kaldi style and shell style", "",
                      "--batch-seconds=30  # seconds per forward pass", "num_workers=1",
                      "extractor_opts='--num_mel_bins 40'", 'tag="from conf"', "nj=1")
    run_feats_stage(["--toolkit", "fbank", "--config", conf, "--tag", "fb", "--nj", 2, data, out],
                    stage_env)
    matrices = list(kaldiio.load_scp_sequential(str(out / "fb.scp")))
    assert [key for key, _ in matrices] == BASE and all(m.shape[1] == 40 for _, m in matrices)
    assert sorted(p.name for p in out.glob("split*")) == ["split2"]


def test_an_out_dir_written_by_another_stage_or_toolkit_is_refused(tmp_path, stage_env):
    data = make_data_dir(tmp_path / "data", keep=set(BASE))
    out = tmp_path / "out"
    run_feats_stage(["--toolkit", "fbank", "--nj", 2, data, out], stage_env)
    assert (out / ".stage").read_text() == "extract_ssl_feats.sh --toolkit fbank\n"
    records = {p.name: p.read_bytes() for p in (out / "split2").iterdir()}
    for stage, toolkit in (("extract_ssl_feats.sh", "mfcc"),
                           ("extract_spk_embed.sh", "resemblyzer")):
        proc = run_stage(["--toolkit", toolkit, "--nj", 2, data, out], stage_env, check=False,
                         script=stage)
        assert proc.returncode == 1
        assert (f"ERROR: {out} holds the outputs of extract_ssl_feats.sh --toolkit fbank "
                f"(recorded in {out}/.stage); this is {stage} --toolkit {toolkit}, whose job "
                f"records would overwrite them: give it another out dir, or remove {out} to "
                "start over") in proc.stderr
    assert {p.name: p.read_bytes() for p in (out / "split2").iterdir()} == records
    # The same stage and toolkit again: a rerun, as before.
    run_feats_stage(["--toolkit", "fbank", "--nj", 2, data, out], stage_env)
    assert [key for key, _ in kaldiio.load_scp_sequential(str(out / "feats.scp"))] == BASE
