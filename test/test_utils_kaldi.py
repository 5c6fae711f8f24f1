"""Tests for the Kaldi-style tools in utils/ (run.pl, parse_options.sh,
split_scp.pl, filter_scp.pl, utt2spk/spk2utt converters, validate_data_dir.sh,
fix_data_dir.sh).  Standard library + pytest only."""

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
UTILS = REPO / "utils"

TOOLS = [
    "parse_options.sh",
    "run.pl",
    "split_scp.pl",
    "filter_scp.pl",
    "utt2spk_to_spk2utt.pl",
    "spk2utt_to_utt2spk.pl",
    "validate_data_dir.sh",
    "fix_data_dir.sh",
    "finish_data_prep.sh",
]


def run(args, env=None, input=None, cwd=None, timeout=30):
    """Runs a command, returning the CompletedProcess (text mode)."""
    return subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        env=env,
        input=input,
        cwd=cwd,
        timeout=timeout,
    )


def tool(name):
    return str(UTILS / name)


def write(path, text):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", TOOLS)
def test_tools_exist_and_are_executable(name):
    path = UTILS / name
    assert path.is_file()
    assert os.access(path, os.X_OK)
    first = path.read_text().splitlines()[0]
    assert first in ("#!/usr/bin/env perl", "#!/usr/bin/env bash")


# ---------------------------------------------------------------- run.pl


def read_log(path):
    return Path(path).read_text().splitlines()


def test_run_pl_job_array_substitution_and_log_format(tmp_path):
    res = run(
        [tool("run.pl"), "JOB=1:4", tmp_path / "log/sub/x.JOB.log",
         "echo", "job", "JOB", "of", "x.JOB"],
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    for j in range(1, 5):
        lines = read_log(tmp_path / f"log/sub/x.{j}.log")
        assert lines[0] == f"# echo job {j} of x.{j}"
        assert lines[1].startswith("# Started at ")
        assert lines[2] == "#"
        assert lines[3] == f"job {j} of x.{j}"
        assert lines[4].startswith("# Accounting: time=")
        assert lines[4].endswith(" threads=1")
        assert lines[5].startswith("# Ended (code 0) at ")
        assert lines[5].endswith(" seconds")
        assert ", elapsed time " in lines[5]
        assert len(lines) == 6


def test_run_pl_single_job_without_spec_and_stderr_in_log(tmp_path):
    log = tmp_path / "a/b/c.log"
    res = run([tool("run.pl"), log, "bash", "-c", "echo out; echo err >&2"])
    assert res.returncode == 0
    lines = read_log(log)
    assert lines[0] == "# bash -c 'echo out; echo err >&2'"
    assert lines[3:5] == ["out", "err"]
    assert lines[-1].startswith("# Ended (code 0) at ")


def test_run_pl_other_variable_name_and_single_job_number(tmp_path):
    res = run([tool("run.pl"), "SPLIT=1:2", tmp_path / "s.SPLIT.log", "echo", "part", "SPLIT"])
    assert res.returncode == 0
    assert read_log(tmp_path / "s.1.log")[3] == "part 1"
    assert read_log(tmp_path / "s.2.log")[3] == "part 2"
    res = run([tool("run.pl"), "JOB=3", tmp_path / "j.JOB.log", "echo", "JOB"])
    assert res.returncode == 0
    assert read_log(tmp_path / "j.3.log")[3] == "3"
    assert not (tmp_path / "j.1.log").exists()


def test_run_pl_quoting_and_pipes(tmp_path):
    log = tmp_path / "q.log"
    # Whitespace args are single-quoted (with embedded quotes escaped); a
    # bare | word becomes a pipe, as in Kaldi.
    res = run([tool("run.pl"), log, "echo", "it's a b", "|", "tr", "a-z", "A-Z"])
    assert res.returncode == 0
    lines = read_log(log)
    assert lines[0] == "# echo 'it'\\''s a b' | tr a-z A-Z"
    assert lines[3] == "IT'S A B"


def test_run_pl_options_accepted_and_num_threads_recorded(tmp_path):
    log = tmp_path / "o.log"
    res = run([tool("run.pl"), "--mem", "4G", "--time=1:00:00", "--num-threads", "3",
               "--config", "conf/queue.conf", "--max-jobs-run=2", log, "true"])
    assert res.returncode == 0, res.stderr
    assert read_log(log)[-2].endswith(" threads=3")


def test_run_pl_failures(tmp_path):
    res = run([tool("run.pl"), "JOB=1:4", tmp_path / "x.JOB.log",
               "test", "JOB", "-ne", "2", "-a", "JOB", "-ne", "4"])
    assert res.returncode == 1
    assert res.stderr == f"run.pl: 2 / 4 failed, log is in {tmp_path}/x.2.log\n"
    assert read_log(tmp_path / "x.2.log")[-1].startswith("# Ended (code 1) at ")
    assert read_log(tmp_path / "x.4.log")[-1].startswith("# Ended (code 1) at ")
    assert read_log(tmp_path / "x.1.log")[-1].startswith("# Ended (code 0) at ")

    res = run([tool("run.pl"), tmp_path / "one.log", "exit", "3"])
    assert res.returncode == 1
    assert res.stderr == f"run.pl: job failed, log is in {tmp_path}/one.log\n"
    assert read_log(tmp_path / "one.log")[-1].startswith("# Ended (code 3) at ")


def test_run_pl_usage_errors(tmp_path):
    res = run([tool("run.pl")])
    assert res.returncode == 1 and "Usage: run.pl" in res.stderr
    res = run([tool("run.pl"), tmp_path / "only.log"])
    assert res.returncode == 1 and "Usage: run.pl" in res.stderr
    res = run([tool("run.pl"), "--bogus", "1", tmp_path / "l.log", "true"])
    assert res.returncode == 1
    assert "unknown option --bogus" in res.stderr and "Usage: run.pl" in res.stderr
    assert not (tmp_path / "l.log").exists()
    res = run([tool("run.pl"), "--max-jobs-run", "0", tmp_path / "l.log", "true"])
    assert res.returncode == 1
    res = run([tool("run.pl"), "JOB=3:1", tmp_path / "l.JOB.log", "true"])
    assert res.returncode == 1 and "end < start" in res.stderr
    # Parallel jobs writing to one log would clobber each other.
    res = run([tool("run.pl"), "JOB=1:2", tmp_path / "same.log", "true"])
    assert res.returncode == 1 and "does not contain 'JOB'" in res.stderr


LOCK_JOB = """\
# Fails if another job holds the lock: mkdir is atomic.
mkdir "$1/lock" 2>/dev/null || { echo overlap; exit 1; }
date +%s.%N > "$1/start.$2"
sleep 0.4
date +%s.%N > "$1/end.$2"
rmdir "$1/lock"
"""


def test_run_pl_max_jobs_run_serialises(tmp_path):
    script = write(tmp_path / "job.sh", LOCK_JOB)
    res = run([tool("run.pl"), "--max-jobs-run", "1", "JOB=1:4", tmp_path / "log/j.JOB.log",
               "bash", script, tmp_path, "JOB"])
    assert res.returncode == 0, res.stderr
    spans = sorted(
        (float((tmp_path / f"start.{j}").read_text()), float((tmp_path / f"end.{j}").read_text()))
        for j in range(1, 5)
    )
    for (s1, e1), (s2, e2) in zip(spans, spans[1:]):
        assert e1 <= s2
    # Control: with 4 slots the same jobs do overlap, so the check above can
    # tell serial from parallel.
    res = run([tool("run.pl"), "--max-jobs-run", "4", "JOB=1:4", tmp_path / "log/p.JOB.log",
               "bash", script, tmp_path, "JOB"])
    assert res.returncode == 1
    assert "failed, log is in" in res.stderr


GPU_JOB = """\
echo "$CUDA_VISIBLE_DEVICES" > "$1/gpu.$2"
date +%s.%N > "$1/start.$2"
mkdir "$1/lock.$CUDA_VISIBLE_DEVICES" 2>/dev/null || { echo "gpu shared"; exit 1; }
sleep 0.4
rmdir "$1/lock.$CUDA_VISIBLE_DEVICES"
date +%s.%N > "$1/end.$2"
"""


def fake_nvidia_smi(tmp_path, body):
    bindir = tmp_path / "bin"
    smi = write(bindir / "nvidia-smi", "#!/usr/bin/env bash\n" + body)
    smi.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    env["PATH"] = f"{bindir}:{env.get('PATH', '/usr/bin:/bin')}"
    return env


def test_run_pl_gpu_assignment_with_fake_nvidia_smi(tmp_path):
    env = fake_nvidia_smi(
        tmp_path,
        'echo "GPU 0: Fake GPU (UUID: GPU-0000)"\necho "GPU 1: Fake GPU (UUID: GPU-1111)"\n',
    )
    script = write(tmp_path / "job.sh", GPU_JOB)
    res = run([tool("run.pl"), "--gpu", "1", "JOB=1:4", tmp_path / "log/g.JOB.log",
               "bash", script, tmp_path, "JOB"], env=env)
    assert res.returncode == 0, res.stderr + "".join(
        (tmp_path / f"log/g.{j}.log").read_text() for j in range(1, 5))
    jobs = []
    for j in range(1, 5):
        gpu = (tmp_path / f"gpu.{j}").read_text().strip()
        assert gpu in {"0", "1"}
        jobs.append((float((tmp_path / f"start.{j}").read_text()),
                     float((tmp_path / f"end.{j}").read_text()), gpu))
    # Jobs whose run times overlap must hold different GPUs; and with two
    # GPUs at most two jobs run at once.
    for a in range(4):
        for b in range(a + 1, 4):
            (s1, e1, g1), (s2, e2, g2) = jobs[a], jobs[b]
            if s1 < e2 and s2 < e1:
                assert g1 != g2
    for s, _, _ in jobs:
        assert sum(1 for s2, e2, _ in jobs if s2 <= s < e2) <= 2


def test_run_pl_gpu_uses_cuda_visible_devices(tmp_path):
    env = fake_nvidia_smi(tmp_path, "exit 1\n")
    env["CUDA_VISIBLE_DEVICES"] = "5,7"
    res = run([tool("run.pl"), "--gpu", "2", "JOB=1:2", tmp_path / "c.JOB.log",
               "echo", "$CUDA_VISIBLE_DEVICES"], env=env)
    assert res.returncode == 0, res.stderr
    assert read_log(tmp_path / "c.1.log")[3] == "5,7"
    assert read_log(tmp_path / "c.2.log")[3] == "5,7"


def test_run_pl_gpu_none_found_warns(tmp_path):
    env = fake_nvidia_smi(tmp_path, "exit 9\n")
    res = run([tool("run.pl"), "--gpu", "1", tmp_path / "n.log",
               "echo", "cvd=${CUDA_VISIBLE_DEVICES-unset}"], env=env)
    assert res.returncode == 0
    assert res.stderr == ("run.pl: --gpu 1 requested but no GPU found; "
                          "jobs run without CUDA_VISIBLE_DEVICES\n")
    assert read_log(tmp_path / "n.log")[3] == "cvd=unset"


def test_run_pl_gpu_zero_leaves_cuda_visible_devices(tmp_path):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="3")
    res = run([tool("run.pl"), "JOB=1:2", tmp_path / "z.JOB.log", "echo", "$CUDA_VISIBLE_DEVICES"],
              env=env)
    assert res.returncode == 0
    assert read_log(tmp_path / "z.2.log")[3] == "3"


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead, just not yet reaped by its (new) parent
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_run_pl_signal_kills_jobs(tmp_path, sig, code):
    job = write(tmp_path / "job.sh",
                'echo $$ > "$1/pid.$2"\nsleep 2 &\necho $! > "$1/sleep.$2"\nwait\n')
    proc = subprocess.Popen(
        [tool("run.pl"), "JOB=1:2", str(tmp_path / "log/s.JOB.log"), "bash", str(job),
         str(tmp_path), "JOB"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    files = [tmp_path / f"{kind}.{j}" for kind in ("pid", "sleep") for j in (1, 2)]
    deadline = time.time() + 5
    while not all(f.exists() and f.read_text().strip() for f in files):
        assert time.time() < deadline, "jobs did not start"
        time.sleep(0.05)
    pids = [int(f.read_text()) for f in files]
    assert all(pid_alive(p) for p in pids)
    t0 = time.time()
    proc.send_signal(sig)
    proc.wait(timeout=10)
    assert proc.returncode == code
    assert time.time() - t0 < 1.5  # well before the jobs' sleep would end
    time.sleep(0.1)
    assert not any(pid_alive(p) for p in pids)
    for j in (1, 2):
        lines = read_log(tmp_path / f"log/s.{j}.log")
        assert lines[0].startswith("# bash ")
        assert not any(line.startswith("# Ended") for line in lines)


# ------------------------------------------------------- parse_options.sh

PO_SCRIPT = """\
#!/usr/bin/env bash
set -euo pipefail
nj=4
batch_seconds=10
use_gpu=false
name=default
help_message="Usage: t.sh [options] <in> <out>
  --nj <n>   number of jobs"
. {utils}/parse_options.sh
echo "nj=$nj batch_seconds=$batch_seconds use_gpu=$use_gpu name=$name"
echo "args=$#"
for a in "$@"; do echo "arg=$a"; done
"""


@pytest.fixture
def po_script(tmp_path):
    s = write(tmp_path / "t.sh", PO_SCRIPT.format(utils=UTILS))
    s.chmod(0o755)
    return s


def test_parse_options_values_and_positionals(po_script):
    res = run([po_script, "--nj", "8", "--batch-seconds", "3", "--use-gpu", "true",
               "--name=a b", "in dir", "out"])
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [
        "nj=8 batch_seconds=3 use_gpu=true name=a b", "args=2", "arg=in dir", "arg=out"]
    res = run([po_script, "--batch_seconds=5", "x"])
    assert res.stdout.splitlines()[0] == "nj=4 batch_seconds=5 use_gpu=false name=default"


def test_parse_options_stops_at_first_non_option_and_double_dash(po_script):
    res = run([po_script, "--nj", "2", "x", "--nj", "3"])
    assert res.returncode == 0
    assert res.stdout.splitlines() == ["nj=2 batch_seconds=10 use_gpu=false name=default",
                                       "args=3", "arg=x", "arg=--nj", "arg=3"]
    res = run([po_script, "--", "--nj", "3"])
    assert res.stdout.splitlines()[1:] == ["args=2", "arg=--nj", "arg=3"]
    res = run([po_script])
    assert res.stdout.splitlines()[1] == "args=0"


def test_parse_options_errors(po_script):
    res = run([po_script, "--foo", "1", "x"])
    assert res.returncode == 1
    assert res.stderr == "parse_options.sh: invalid option --foo\n"
    assert res.stdout == ""
    res = run([po_script, "--use-gpu", "yes", "x"])
    assert res.returncode == 1
    assert "--use-gpu" in res.stderr and "true or false" in res.stderr
    res = run([po_script, "--nj"])
    assert res.returncode == 1 and "--nj requires a value" in res.stderr
    res = run([po_script, "--bad;name", "1"])
    assert res.returncode == 1 and "invalid option --bad;name" in res.stderr


def test_parse_options_help(po_script):
    res = run([po_script, "--help", "x"])
    assert res.returncode == 0
    assert res.stdout == ""
    assert res.stderr == "Usage: t.sh [options] <in> <out>\n  --nj <n>   number of jobs\n"
    assert run([po_script, "-h"]).returncode == 0


def test_parse_options_config(po_script, tmp_path):
    conf = write(tmp_path / "my.conf", "nj=16\nname=fromconf\n")
    res = run([po_script, "--config", conf, "x"])
    assert res.returncode == 0
    assert res.stdout.splitlines()[0] == "nj=16 batch_seconds=10 use_gpu=false name=fromconf"
    # The command line wins over the config file wherever --config appears.
    res = run([po_script, "--nj", "2", f"--config={conf}", "x"])
    assert res.stdout.splitlines()[0] == "nj=2 batch_seconds=10 use_gpu=false name=fromconf"
    res = run([po_script, "--config", tmp_path / "missing.conf", "x"])
    assert res.returncode == 1
    assert str(tmp_path / "missing.conf") in res.stderr


def test_parse_options_config_is_read_not_run(po_script, tmp_path):
    """Kaldi-style and shell-style lines, comments, quotes and CRLF; the same checks as the
    command line, each error naming the file and line; nothing in the file is executed."""
    conf = write(tmp_path / "ok.conf", "# comment\n\n  --batch-seconds=3   # Kaldi style\r\n"
                                       "use_gpu=true\nname='a $b'\n--nj=\"5\"")
    res = run([po_script, "--config", conf, "x"])
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0] == "nj=5 batch_seconds=3 use_gpu=true name=a $b"
    marker = tmp_path / "ran"
    for lines, message in [
        ("nj=2\nbatch_second=30\n", "line 2: invalid option batch_second (t.sh has no such "
                                    "option; --help lists them)"),
        ("--num-mel-bins=40\n", "line 1: invalid option --num-mel-bins"),
        ("nj 3\n", "line 1: expected --name=value or name=value, got 'nj 3'"),
        (f"touch {marker}\n", f"line 1: expected --name=value or name=value, got 'touch {marker}'"),
        (f"name=$(touch {marker})\n", "line 1: cannot read the value of name"),
        ("name=$HOME\n", "line 1: the value of name ('$HOME') would need the shell"),
        ("name=a b\n", "line 1: cannot read the value of name ('a b'): quote a value"),
        ("use_gpu=yes\n", "line 1: option use_gpu expects true or false, got 'yes'"),
        ("config=other.conf\n", "line 1: a config file cannot name another (--config)"),
    ]:
        conf = write(tmp_path / "bad.conf", lines)
        res = run([po_script, "--config", conf, "x"])
        assert res.returncode == 1, lines
        assert res.stderr.startswith(f"parse_options.sh: {conf} {message}")
        assert res.stderr.count("\n") == 1 and res.stdout == "" and not marker.exists()


def test_parse_options_help_function(tmp_path):
    """A caller's print_help, called with the options given before --help applied."""
    script = write(tmp_path / "h.sh", f"""#!/usr/bin/env bash
set -euo pipefail
last=5
print_help() {{ echo "stages 1 to $last"; }}
. {UTILS}/parse_options.sh
echo ran
""")
    script.chmod(0o755)
    res = run([script, "--last", "3", "--help"])
    assert res.returncode == 0 and res.stderr == "stages 1 to 3\n" and res.stdout == ""


# --------------------------------------------------------- split_scp.pl


def scp(keys, suffix=""):
    return "".join(f"{k} /data/{k}.wav{suffix}\n" for k in keys)


def keys_of(path):
    return [line.split()[0] for line in Path(path).read_text().splitlines()]


def test_split_scp_by_lines(tmp_path):
    keys = [f"u{i:02d}" for i in range(10)]
    inp = write(tmp_path / "in.scp", scp(keys))
    outs = [tmp_path / f"out.{i}.scp" for i in range(1, 4)]
    res = run([tool("split_scp.pl"), inp, *outs])
    assert res.returncode == 0, res.stderr
    assert [keys_of(o) for o in outs] == [keys[0:4], keys[4:7], keys[7:10]]
    assert "".join(o.read_text() for o in outs) == inp.read_text()


def test_split_scp_j_form(tmp_path):
    keys = [f"u{i}" for i in range(7)]
    inp = write(tmp_path / "in.scp", scp(keys))
    res = run([tool("split_scp.pl"), "-j", "3", "1", inp])
    assert res.returncode == 0
    assert res.stdout == scp(keys[3:5])
    res = run([tool("split_scp.pl"), "--one-based", "-j", "3", "1", inp])
    assert res.stdout == scp(keys[0:3])
    res = run([tool("split_scp.pl"), "-j", "3", "2", inp, tmp_path / "part.scp"])
    assert (tmp_path / "part.scp").read_text() == scp(keys[5:7])
    res = run([tool("split_scp.pl"), "-j", "3", "3", inp])
    assert res.returncode == 1 and "out of range" in res.stderr
    res = run([tool("split_scp.pl"), "--one-based", "-j", "3", "0", inp])
    assert res.returncode == 1


def test_split_scp_utt2spk_keeps_speakers_whole(tmp_path):
    spk_sizes = [("a", 3), ("b", 1), ("c", 2), ("d", 4)]
    utts = [(f"{s}-{i}", s) for s, n in spk_sizes for i in range(n)]
    inp = write(tmp_path / "in.scp", scp([u for u, _ in utts]))
    u2s = write(tmp_path / "utt2spk", "".join(f"{u} {s}\n" for u, s in utts))
    outs = [tmp_path / "o1", tmp_path / "o2"]
    res = run([tool("split_scp.pl"), f"--utt2spk={u2s}", inp, *outs])
    assert res.returncode == 0, res.stderr
    assert keys_of(outs[0]) == ["a-0", "a-1", "a-2", "b-0"]
    assert keys_of(outs[1]) == ["c-0", "c-1", "d-0", "d-1", "d-2", "d-3"]
    outs = [tmp_path / f"p{i}" for i in range(4)]
    res = run([tool("split_scp.pl"), "--utt2spk", u2s, inp, *outs])
    assert res.returncode == 0
    speakers = [sorted({k.split("-")[0] for k in keys_of(o)}) for o in outs]
    assert speakers == [["a"], ["b"], ["c"], ["d"]]
    # Fewer speakers than outputs.
    outs = [tmp_path / f"q{i}" for i in range(5)]
    res = run([tool("split_scp.pl"), "--utt2spk", u2s, inp, *outs])
    assert res.returncode == 1
    assert "4 speakers" in res.stderr and "fewer than the 5 parts" in res.stderr


def test_split_scp_utt2spk_errors(tmp_path):
    inp = write(tmp_path / "in.scp", scp(["a-1", "b-1", "c-1"]))
    u2s = write(tmp_path / "utt2spk", "a-1 a\nc-1 c\n")
    res = run([tool("split_scp.pl"), "--utt2spk", u2s, inp, tmp_path / "o1", tmp_path / "o2"])
    assert res.returncode == 1
    assert "key b-1" in res.stderr and str(u2s) in res.stderr
    inp2 = write(tmp_path / "in2.scp", scp(["a-1", "b-1", "a-2"]))
    u2s2 = write(tmp_path / "utt2spk2", "a-1 a\na-2 a\nb-1 b\n")
    res = run([tool("split_scp.pl"), "--utt2spk", u2s2, inp2, tmp_path / "o1", tmp_path / "o2"])
    assert res.returncode == 1 and "not contiguous" in res.stderr


def test_split_scp_utt2dur_balances_duration(tmp_path):
    durs = [10, 1, 1, 1, 1, 1, 1, 1, 1, 2]
    keys = [f"u{i}" for i in range(10)]
    inp = write(tmp_path / "in.scp", scp(keys))
    u2d = write(tmp_path / "utt2dur", "".join(f"{k} {d}\n" for k, d in zip(keys, durs)))
    outs = [tmp_path / "o1", tmp_path / "o2"]
    res = run([tool("split_scp.pl"), "--utt2dur", u2d, inp, *outs])
    assert res.returncode == 0, res.stderr
    assert keys_of(outs[0]) == ["u0"]
    assert keys_of(outs[1]) == keys[1:]
    # Every part stays non-empty even when one utterance dominates.
    inp = write(tmp_path / "in2.scp", scp(["a", "b", "c", "d"]))
    u2d = write(tmp_path / "utt2dur2", "a 1\nb 1\nc 1\nd 100.5\n")
    outs = [tmp_path / f"p{i}" for i in range(3)]
    res = run([tool("split_scp.pl"), f"--utt2dur={u2d}", inp, *outs])
    assert res.returncode == 0
    assert [keys_of(o) for o in outs] == [["a", "b"], ["c"], ["d"]]
    # Missing key / bad value.
    u2d = write(tmp_path / "utt2dur3", "a 1\nb 1\nc 1\n")
    res = run([tool("split_scp.pl"), "--utt2dur", u2d, inp, *outs])
    assert res.returncode == 1 and "key d" in res.stderr and str(u2d) in res.stderr
    u2d = write(tmp_path / "utt2dur4", "a 1\nb x\nc 1\nd 1\n")
    res = run([tool("split_scp.pl"), "--utt2dur", u2d, inp, *outs])
    assert res.returncode == 1 and "'x'" in res.stderr


def test_split_scp_errors(tmp_path):
    res = run([tool("split_scp.pl")])
    assert res.returncode == 1 and "Usage: split_scp.pl" in res.stderr
    res = run([tool("split_scp.pl"), tmp_path / "nope.scp", tmp_path / "o1"])
    assert res.returncode == 1 and str(tmp_path / "nope.scp") in res.stderr
    inp = write(tmp_path / "in.scp", scp(["a", "b"]))
    res = run([tool("split_scp.pl"), inp, tmp_path / "o1", tmp_path / "o2", tmp_path / "o3"])
    assert res.returncode == 1 and "2 lines" in res.stderr
    res = run([tool("split_scp.pl"), "--bogus", inp, tmp_path / "o1"])
    assert res.returncode == 1 and "unknown option --bogus" in res.stderr


# --------------------------------------------------------- filter_scp.pl


def test_filter_scp(tmp_path):
    inp = write(tmp_path / "in.scp", "c 3 x\na 1 y\nb 2 x\nd 4 z\n")
    ids = write(tmp_path / "ids", "b\na extra fields\n")
    res = run([tool("filter_scp.pl"), ids, inp])
    assert res.returncode == 0
    assert res.stdout == "a 1 y\nb 2 x\n"
    res = run([tool("filter_scp.pl"), "--exclude", ids, inp])
    assert res.stdout == "c 3 x\nd 4 z\n"
    xs = write(tmp_path / "xs", "x\n")
    res = run([tool("filter_scp.pl"), "-f", "3", xs, "-"], input=inp.read_text())
    assert res.stdout == "c 3 x\nb 2 x\n"
    res = run([tool("filter_scp.pl"), "--exclude", "-f", "3", xs], input=inp.read_text())
    assert res.stdout == "a 1 y\nd 4 z\n"


def test_filter_scp_errors(tmp_path):
    res = run([tool("filter_scp.pl")])
    assert res.returncode == 1 and "Usage: filter_scp.pl" in res.stderr
    inp = write(tmp_path / "in.scp", "a 1\n")
    res = run([tool("filter_scp.pl"), tmp_path / "noids", inp])
    assert res.returncode == 1 and str(tmp_path / "noids") in res.stderr
    ids = write(tmp_path / "ids", "a\n")
    res = run([tool("filter_scp.pl"), ids, tmp_path / "nope.scp"])
    assert res.returncode == 1 and str(tmp_path / "nope.scp") in res.stderr
    res = run([tool("filter_scp.pl"), "-f", "3", ids, inp])
    assert res.returncode == 1 and "fewer than 3 fields" in res.stderr
    res = run([tool("filter_scp.pl"), "-f", "0", ids, inp])
    assert res.returncode == 1


# ------------------------------------------------- utt2spk <-> spk2utt


def test_utt2spk_spk2utt_roundtrip(tmp_path):
    u2s_text = "s1-a s1\ns1-b s1\ns2-a s2\ns1-c s1\n"
    u2s = write(tmp_path / "utt2spk", u2s_text)
    res = run([tool("utt2spk_to_spk2utt.pl"), u2s])
    assert res.returncode == 0
    assert res.stdout == "s1 s1-a s1-b s1-c\ns2 s2-a\n"
    res2 = run([tool("utt2spk_to_spk2utt.pl")], input=u2s_text)
    assert res2.stdout == res.stdout
    back = run([tool("spk2utt_to_utt2spk.pl")], input=res.stdout)
    assert back.returncode == 0
    assert back.stdout == "s1-a s1\ns1-b s1\ns1-c s1\ns2-a s2\n"
    s2u = write(tmp_path / "spk2utt", res.stdout)
    assert run([tool("spk2utt_to_utt2spk.pl"), s2u]).stdout == back.stdout


def test_utt2spk_spk2utt_errors(tmp_path):
    bad = write(tmp_path / "utt2spk", "a s1\nb\n")
    res = run([tool("utt2spk_to_spk2utt.pl"), bad])
    assert res.returncode == 1 and f"line 2 in {bad}" in res.stderr
    res = run([tool("utt2spk_to_spk2utt.pl"), tmp_path / "none"])
    assert res.returncode == 1 and str(tmp_path / "none") in res.stderr
    res = run([tool("utt2spk_to_spk2utt.pl"), "a", "b"])
    assert res.returncode == 1 and "Usage:" in res.stderr
    bad = write(tmp_path / "spk2utt", "s1 a b\ns2\n")
    res = run([tool("spk2utt_to_utt2spk.pl"), bad])
    assert res.returncode == 1 and f"line 2 in {bad}" in res.stderr
    res = run([tool("spk2utt_to_utt2spk.pl"), "--x"])
    assert res.returncode == 1 and "Usage:" in res.stderr


# --------------------------------------------- validate / fix data dirs

GOOD = {
    "wav.scp": "s1-u1 /w/s1-u1.wav\ns1-u2 sox /w/s1-u2.flac -t wav - |\ns2-u1 /w/s2-u1.wav\n",
    "utt2spk": "s1-u1 s1\ns1-u2 s1\ns2-u1 s2\n",
    "spk2utt": "s1 s1-u1 s1-u2\ns2 s2-u1\n",
    "text": "s1-u1 hello world\ns1-u2 caf\u00e9\ns2-u1 bye\n",
    "utt2dur": "s1-u1 1.5\ns1-u2 2\ns2-u1 0.25\n",
}


def make_dir(path, files):
    path.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        if isinstance(text, bytes):
            (path / name).write_bytes(text)
        else:
            (path / name).write_text(text, encoding="utf-8")
    return path


def validate(d, *opts):
    return run([tool("validate_data_dir.sh"), *opts, d])


def test_validate_good_dir(tmp_path):
    d = make_dir(tmp_path / "data", GOOD)
    res = validate(d)
    assert res.returncode == 0, res.stderr
    assert res.stdout == f"validate_data_dir.sh: Successfully validated data-directory {d}\n"


def test_validate_segments(tmp_path):
    files = dict(GOOD)
    files["wav.scp"] = "r1 /w/r1.wav\nr2 /w/r2.wav\n"
    files["segments"] = "s1-u1 r1 0 1.5\ns1-u2 r1 1.5 3.5\ns2-u1 r2 0.0 0.25\n"
    d = make_dir(tmp_path / "ok", files)
    assert validate(d).returncode == 0
    bad = dict(files, segments="s1-u1 r1 0 1.5\ns1-u2 r1 3.5 1.5\ns2-u1 r2 0.0 0.25\n")
    res = validate(make_dir(tmp_path / "b1", bad))
    assert res.returncode == 1
    assert f"{tmp_path}/b1/segments line 2" in res.stderr and "end 1.5 <= start 3.5" in res.stderr
    bad = dict(files, segments="s1-u1 r1 0 1.5\ns1-u2 r1 1.5 3.5\ns2-u1 r9 0.0 0.25\n")
    res = validate(make_dir(tmp_path / "b2", bad))
    assert res.returncode == 1
    assert "recording 'r9'" in res.stderr and f"{tmp_path}/b2/wav.scp" in res.stderr


@pytest.mark.parametrize(
    "name,change,expect",
    [
        ("unsorted", {"utt2spk": "s1-u2 s1\ns1-u1 s1\ns2-u1 s2\n"},
         ["utt2spk is not sorted", "key 's1-u1' on line 2"]),
        ("duplicate", {"text": "s1-u1 hello\ns1-u1 again\ns1-u2 x\ns2-u1 bye\n"},
         ["text has duplicate key 's1-u1'"]),
        ("mismatch", {"wav.scp": "s1-u1 /w/a.wav\ns2-u1 /w/c.wav\n"},
         ["utterance 's1-u2' is in", "utt2spk but not in", "wav.scp"]),
        ("nonutf8", {"text": b"s1-u1 hello\ns1-u2 caf\xe9\ns2-u1 bye\n"},
         ["text line 2 (utterance 's1-u2') is not valid UTF-8"]),
        ("spk2utt", {"spk2utt": "s1 s1-u1\ns2 s2-u1\n"},
         ["spk2utt does not match", "utt2spk"]),
        ("fields", {"utt2spk": "s1-u1 s1\ns1-u2 s1 extra\ns2-u1 s2\n"},
         ["utt2spk line 2 has 3 fields"]),
        # spk2utt in utt2spk's order of first appearance: not sorted by speaker
        ("spksort", {"utt2spk": "a-1 zz\nb-1 aa\n", "spk2utt": "zz a-1\naa b-1\n",
                     "wav.scp": "a-1 x\nb-1 y\n", "text": "a-1 x\nb-1 y\n",
                     "utt2dur": "a-1 1\nb-1 1\n"},
         ["spk2utt is not sorted (LC_ALL=C): key 'aa' on line 2", "utils/fix_data_dir.sh"]),
        ("duration", {"utt2dur": "s1-u1 1.5\ns1-u2 0\ns2-u1 0.25\n"},
         ["utt2dur line 2", "not a positive number"]),
        ("crlf", {"text": "s1-u1 hello\r\ns1-u2 x\ns2-u1 bye\n"},
         ["text line 1 contains a carriage return"]),
    ],
)
def test_validate_failures(tmp_path, name, change, expect):
    d = make_dir(tmp_path / name, {**GOOD, **change})
    res = validate(d)
    assert res.returncode == 1
    assert res.stderr.startswith("validate_data_dir.sh: ")
    assert str(d) in res.stderr
    for e in expect:
        assert e in res.stderr


def test_validate_options_and_usage(tmp_path):
    files = {k: v for k, v in GOOD.items() if k not in ("text", "wav.scp")}
    d = make_dir(tmp_path / "d", files)
    res = validate(d)
    assert res.returncode == 1 and f"{d}/wav.scp does not exist" in res.stderr
    res = validate(d, "--no-wav")
    assert res.returncode == 1 and f"{d}/text does not exist" in res.stderr
    assert validate(d, "--no-wav", "--no-text", "--no-feats").returncode == 0
    # Speaker ids that are not prefixes of utterance ids: Kaldi's rule holds, a warning only
    # (silenced by --no-spk-sort).
    d2 = make_dir(tmp_path / "d2", {"utt2spk": "a-1 zz\nb-1 aa\n", "spk2utt": "aa b-1\nzz a-1\n"})
    res = validate(d2, "--no-wav", "--no-text")
    assert res.returncode == 0 and "warning: " in res.stderr and "not also sorted by speaker" \
        in res.stderr
    res = validate(d2, "--no-wav", "--no-text", "--no-spk-sort")
    assert res.returncode == 0 and res.stderr == ""
    res = run([tool("validate_data_dir.sh")])
    assert res.returncode == 1 and "Usage: validate_data_dir.sh" in res.stderr
    res = validate(d, "--bogus")
    assert res.returncode == 1 and "unknown option --bogus" in res.stderr
    res = validate(tmp_path / "nodir")
    assert res.returncode == 1 and f"{tmp_path}/nodir does not exist" in res.stderr
    res = validate(make_dir(tmp_path / "empty", {}))
    assert res.returncode == 1 and "utt2spk does not exist" in res.stderr


def test_validate_spk2utt_must_hold_the_pairs_of_utt2spk(tmp_path):
    """Order within a spk2utt line is free; a pair missing, moved or repeated is named, with
    the repair."""
    ok = make_dir(tmp_path / "ok", dict(GOOD, spk2utt="s1 s1-u2 s1-u1\ns2 s2-u1\n"))
    assert validate(ok).returncode == 0
    for name, spk2utt, message in [
        ("moved", "s1 s1-u1\ns2 s1-u2 s2-u1\n",
         "utterance 's1-u2' is under speaker 's2' (line 2), {d}/utt2spk says 's1'"),
        ("twice", "s1 s1-u1 s1-u2 s1-u1\ns2 s2-u1\n",
         "utterance 's1-u1' is listed twice (lines 1 and 1)"),
        ("extra", "s1 s1-u1 s1-u2 s1-u3\ns2 s2-u1\n", "utterance 's1-u3' (line 1) is not in"),
        ("lost", "s1 s1-u1\ns2 s2-u1\n", "utterance 's1-u2' (speaker 's1') is not in {d}/spk2utt"),
    ]:
        d = make_dir(tmp_path / name, dict(GOOD, spk2utt=spk2utt))
        res = validate(d)
        assert res.returncode == 1
        assert f"{d}/spk2utt does not match {d}/utt2spk: {message.format(d=d)}" in res.stderr
        assert res.stderr.endswith(f"; utils/fix_data_dir.sh {d} repairs this: it sorts the "
                                   "tables, keeps the first line of a duplicate id and only the "
                                   "ids present in every file, and rebuilds spk2utt\n")
        assert run([tool("fix_data_dir.sh"), d]).returncode == 0
        assert validate(d).returncode == 0


def test_validate_says_what_to_edit_where_fix_data_dir_cannot(tmp_path):
    for name, change, message in [
        ("fields", {"utt2spk": "s1-u1 s1\ns1-u2 s1 extra\ns2-u1 s2\n"},
         "utt2spk line 2 has 3 fields, expected 2: 's1-u2 s1 extra'; correct or delete that line"),
        ("utf8", {"text": b"s1-u1 hello\ns1-u2 caf\xe9\ns2-u1 bye\n"},
         "text line 2 (utterance 's1-u2') is not valid UTF-8; convert the file to UTF-8"),
        ("duration", {"utt2dur": "s1-u1 1.5\ns1-u2 0\ns2-u1 0.25\n"},
         "utt2dur line 2: duration '0' of 's1-u2' is not a positive number; correct that line, "
         "or remove"),
    ]:
        d = make_dir(tmp_path / name, {**GOOD, **change})
        res = validate(d)
        assert res.returncode == 1 and f"{d}/{message}" in res.stderr
        assert "fix_data_dir.sh" not in res.stderr


def test_validate_and_fix_without_speakers(tmp_path):
    """--spk-optional: a data dir for tools that use no speakers; its utterances are those of
    segments, else of wav.scp."""
    files = {"wav.scp": GOOD["wav.scp"], "text": GOOD["text"], "utt2dur": GOOD["utt2dur"]}
    d = make_dir(tmp_path / "d", files)
    res = validate(d)
    assert res.returncode == 1 and f"{d}/utt2spk does not exist (without speaker labels, " \
        f"make each utterance its own speaker: awk '{{print $1, $1}}' {d}/wav.scp > " \
        f"{d}/utt2spk)" in res.stderr
    assert validate(d, "--spk-optional").returncode == 0
    bad = make_dir(tmp_path / "bad", dict(files, utt2dur="s1-u1 1.5\ns2-u1 0.25\n"))
    res = validate(bad, "--spk-optional")
    assert res.returncode == 1
    assert f"utterance 's1-u2' is in {bad}/wav.scp but not in {bad}/utt2dur; " \
        f"utils/fix_data_dir.sh --spk-optional {bad} repairs this" in res.stderr
    res = run([tool("fix_data_dir.sh"), bad])
    assert res.returncode == 1 and f"use fix_data_dir.sh --spk-optional {bad}" in res.stderr
    res = run([tool("fix_data_dir.sh"), "--spk-optional", bad])
    assert res.returncode == 0, res.stderr
    assert "kept 2 utterances out of 3" in res.stdout
    assert not (bad / "spk2utt").exists()
    assert (bad / "text").read_text() == "s1-u1 hello world\ns2-u1 bye\n"
    assert validate(bad, "--spk-optional").returncode == 0
    # segments: the utterance list when there is no utt2spk
    seg = make_dir(tmp_path / "seg", {"wav.scp": "r1 /w/r1.wav\n",
                                      "segments": "u1 r1 0 1\nu2 r1 1 2\n", "text": "u1 a\n"})
    res = validate(seg, "--spk-optional")
    assert res.returncode == 1 and f"utterance 'u2' is in {seg}/segments but not in " \
        f"{seg}/text" in res.stderr
    assert validate(seg, "--spk-optional", "--any-text-ids").returncode == 0


def test_fix_data_dir_repairs(tmp_path):
    d = make_dir(tmp_path / "data", {
        # Unsorted, an extra recording and a duplicate; s2-u1 has no text.
        "wav.scp": "s2-u1 /w/c.wav\nzz-extra /w/z.wav\ns1-u1 /w/a.wav\ns1-u2 /w/b.wav\n"
                   "s1-u1 /w/dup.wav\n",
        "utt2spk": "s1-u2 s1\ns2-u1 s2\ns1-u1 s1\n",
        "spk2utt": "s2 s2-u1\ns1 s1-u2 s1-u1\n",
        "text": "s1-u2 b\ns1-u1 a\n",
        "spk2gender": "s2 f\ns1 m\n",
    })
    assert validate(d).returncode == 1
    res = run([tool("fix_data_dir.sh"), d])
    assert res.returncode == 0, res.stderr
    assert "fix_data_dir.sh: kept 2 utterances out of 3\n" in res.stdout
    assert "removed utterances: s2-u1" in res.stdout
    assert (d / "wav.scp").read_text() == "s1-u1 /w/a.wav\ns1-u2 /w/b.wav\n"
    assert (d / "utt2spk").read_text() == "s1-u1 s1\ns1-u2 s1\n"
    assert (d / "spk2utt").read_text() == "s1 s1-u1 s1-u2\n"
    assert (d / "text").read_text() == "s1-u1 a\ns1-u2 b\n"
    assert (d / "spk2gender").read_text() == "s1 m\n"
    assert (d / ".backup/utt2spk").read_text() == "s1-u2 s1\ns2-u1 s2\ns1-u1 s1\n"
    res = validate(d)
    assert res.returncode == 0, res.stderr


def test_fix_data_dir_segments_drops_unused_recordings(tmp_path):
    d = make_dir(tmp_path / "data", {
        "wav.scp": "r2 /w/r2.wav\nr1 /w/r1.wav\nr3 /w/r3.wav\n",
        "segments": "s1-b r1 1 2\ns1-a r1 0 1\ns2-a r2 0 1\ns3-a r9 0 1\n",
        "utt2spk": "s1-a s1\ns1-b s1\ns2-a s2\ns3-a s3\n",
        "text": "s1-a x\ns1-b y\ns2-a z\ns3-a w\n",
        "utt2dur": "s1-a 1\ns1-b 1\ns3-a 1\n",
    })
    res = run([tool("fix_data_dir.sh"), d])
    assert res.returncode == 0, res.stderr
    assert "kept 2 utterances out of 4" in res.stdout
    assert "removed utterances: s2-a s3-a" in res.stdout
    assert (d / "segments").read_text() == "s1-a r1 0 1\ns1-b r1 1 2\n"
    assert (d / "wav.scp").read_text() == "r1 /w/r1.wav\n"
    assert (d / "spk2utt").read_text() == "s1 s1-a s1-b\n"
    assert validate(d).returncode == 0


def test_fix_data_dir_errors(tmp_path):
    res = run([tool("fix_data_dir.sh")])
    assert res.returncode == 1 and "Usage: fix_data_dir.sh" in res.stderr
    res = run([tool("fix_data_dir.sh"), tmp_path / "nodir"])
    assert res.returncode == 1 and f"{tmp_path}/nodir does not exist" in res.stderr
    d = make_dir(tmp_path / "d", {"wav.scp": "a x\n"})
    res = run([tool("fix_data_dir.sh"), d])
    assert res.returncode == 1 and f"{d}/utt2spk does not exist" in res.stderr
    d = make_dir(tmp_path / "e", {"utt2spk": "a s\nb\n"})
    res = run([tool("fix_data_dir.sh"), d])
    assert res.returncode == 1 and f"{d}/utt2spk line 2 has 1 fields" in res.stderr


def test_finish_data_prep(tmp_path):
    tmp = tmp_path / "tmp"
    write(tmp / "wav.scp", "s2-b /a/b.wav\ns1-a /a/a.wav\ns1-c /a/c.wav\n")
    write(tmp / "utt2spk", "s2-b s2\ns1-a s1\ns1-c s1\n")
    write(tmp / "text", "s1-a HELLO\ns2-b WORLD\n")
    write(tmp / "no_text", "s1-c\n")
    write(tmp / "speaker2gender", "s1 f\ns9 m\n")
    data = tmp_path / "data"
    res = run([tool("finish_data_prep.sh"), tmp, data, "corpus-x"])
    assert res.returncode == 0, res.stderr
    assert (data / "wav.scp").read_text() == "s1-a /a/a.wav\ns1-c /a/c.wav\ns2-b /a/b.wav\n"
    assert (data / "spk2utt").read_text() == "s1 s1-a s1-c\ns2 s2-b\n"
    assert (data / "spk2gender").read_text() == "s1 f\n"
    assert "no gender for s2" in res.stderr
    assert "(3 recordings, 2 speakers, 2 with a transcript)" in res.stdout
    assert "1 recordings have no transcript (kept in wav.scp, left out of text): s1-c" in res.stdout

    write(tmp / "wav.scp", "s1-a /a/a.wav\ns1-a /a/b.wav\n")
    res = run([tool("finish_data_prep.sh"), tmp, data, "corpus-x"])
    assert res.returncode == 1 and "duplicate utterance ids in corpus-x: s1-a" in res.stderr
    write(tmp / "wav.scp", "s1-a /a/a.wav\n")
    (tmp / "text").write_text("")
    res = run([tool("finish_data_prep.sh"), "--missing_text", ".txt file", tmp, data, "x"])
    assert res.returncode == 1 and "none of the 1 recordings of x has a .txt file" in res.stderr
    res = run([tool("finish_data_prep.sh"), tmp])
    assert res.returncode == 1 and "Usage:" in res.stderr

    # A corpus without transcripts (speakers only): no text read or written, an old one removed.
    (tmp / "text").unlink()
    write(tmp / "utt2spk", "s1-a s1\n")
    write(data / "text", "s1-a STALE\n")
    res = run([tool("finish_data_prep.sh"), "--text", "false", tmp, data, "x"])
    assert res.returncode == 0, res.stderr
    assert not (data / "text").exists()
    assert "(1 recordings, 1 speakers, no transcripts)" in res.stdout
    res = run([tool("finish_data_prep.sh"), "--text", "no", tmp, data, "x"])
    assert res.returncode == 1 and "--text expects true or false, got 'no'" in res.stderr
