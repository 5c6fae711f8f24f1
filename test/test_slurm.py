"""Tests for utils/slurm.pl and the local Slurm cluster of tools/slurm/.

The first part runs slurm.pl against fake sbatch/squeue/scontrol on PATH
(no cluster needed): option mapping, config files, scheduler-ended tasks.
The second part runs against a real single-node cluster that the `cluster`
fixture (conftest.py) starts with tools/slurm/start.sh; those tests skip, saying why, when
it does not come up (e.g. not root).  Set SPEECHDUMP_SLURM_SLOW=1 to also
run the time-limit test (about 80 s: Slurm's shortest limit is one minute
and it checks limits every 30 s).  Standard library + pytest only."""

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import SLURM_START as START

REPO = Path(__file__).resolve().parent.parent
SLURM_PL = REPO / "utils" / "slurm.pl"
STOP = REPO / "tools" / "slurm" / "stop.sh"
EGS_CONF = REPO / "egs" / "sample_speakers" / "spk1" / "conf" / "slurm.conf"


def run(args, env=None, cwd=None, timeout=60):
    return subprocess.run([str(a) for a in args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=timeout)


def lines(path):
    return Path(path).read_text().splitlines()


def check_log(path, cmd, code):
    """Kaldi's header and footer around the command's output."""
    log = lines(path)
    assert log[0] == f"# {cmd}", log
    assert log[1].startswith("# Started at "), log
    assert log[2].startswith("# Running on ") and "as Slurm job " in log[2], log
    assert log[3] == "#", log
    assert re.fullmatch(r"# Accounting: time=\d+ threads=\d+", log[-3]), log
    assert re.fullmatch(rf"# Ended \(code {code}\) at .*, elapsed time \d+ seconds", log[-2]), log
    assert re.fullmatch(rf"# Finished at .* with status {code}", log[-1]), log
    return log[4:-3]


def test_slurm_pl_is_executable():
    assert os.access(SLURM_PL, os.X_OK)
    assert SLURM_PL.read_text().splitlines()[0] == "#!/usr/bin/env perl"
    for script in (START, STOP):
        assert script.read_text().startswith("#!/usr/bin/env bash")


# ------------------------------------------------------ fake Slurm commands

FAKE_SBATCH = r"""#!/usr/bin/env bash
# Records its arguments, then runs the array's tasks one after another
# (except those in $FAKE_SKIP) the way slurmd would, and prints a job id.
printf '%s\n' "$@" >"$FAKE_DIR/sbatch.args"
if [ -n "${FAKE_SBATCH_FAIL:-}" ]; then
    echo "sbatch: error: $FAKE_SBATCH_FAIL" >&2
    exit 1
fi
script=${@: -1}
array= out=
for a in "$@"; do
    case $a in --array=*) array=${a#--array=} ;; --output=*) out=${a#--output=} ;; esac
done
range=${array%%[%]*}
for ((t = ${range%-*}; t <= ${range#*-}; t++)); do
    case " ${FAKE_SKIP:-} " in *" $t "*) continue ;; esac
    SLURM_ARRAY_TASK_ID=$t SLURM_ARRAY_JOB_ID=4242 bash "$script" >"${out//%a/$t}" 2>&1
done
echo 4242
"""

FAKE_SCONTROL = r"""#!/usr/bin/env bash
for t in ${FAKE_SKIP:-}; do
    echo "JobId=$((5000 + t)) ArrayJobId=4242 ArrayTaskId=$t JobName=x JobState=TIMEOUT" \
        "Reason=TimeLimit Dependency=(null) ExitCode=0:15"
done
"""


@pytest.fixture
def fake(tmp_path):
    """PATH with fake sbatch/squeue/scontrol/sacct; returns (env, args-reader)."""
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    scripts = {
        "sbatch": FAKE_SBATCH,
        "squeue": "#!/usr/bin/env bash\nexit 0\n",   # nothing left in the queue
        "scontrol": FAKE_SCONTROL,
        "sacct": "#!/usr/bin/env bash\necho 'sacct: accounting disabled' >&2; exit 1\n",
        "scancel": "#!/usr/bin/env bash\nexit 0\n",
    }
    for name, text in scripts.items():
        (bindir / name).write_text(text)
        (bindir / name).chmod(0o755)
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}", FAKE_DIR=str(tmp_path))
    env.pop("SLURM_CONF", None)
    work = tmp_path / "work"
    work.mkdir()

    def sbatch_args():
        return (tmp_path / "sbatch.args").read_text().splitlines()

    return env, work, sbatch_args


def test_builtin_config_maps_options(fake):
    env, work, sbatch_args = fake
    res = run([SLURM_PL, "--gpu", "2", "--mem", "4G", "--num-threads", "3",
               "--time", "1:00:00", "--max-jobs-run", "2", "JOB=1:4",
               "log/x.JOB.log", "echo", "task", "JOB"], env=env, cwd=work)
    assert res.returncode == 0, res.stderr
    args = sbatch_args()
    opts = " ".join(args[:-1])
    assert args[0] == "--export=PATH"
    assert "--gres=gpu:2" in args
    assert "--mem 4G" in opts and "--cpus-per-task 3" in opts and "--time 1:00:00" in opts
    assert "--array=1-4%2" in args
    assert not any(a in ("-p", "--partition") or a.startswith("--partition=") for a in args)
    assert args[-1] == str(work / "log/q/x.sh")
    for j in range(1, 5):
        assert check_log(work / f"log/x.{j}.log", f"echo task {j}", 0) == [f"task {j}"]
        assert "threads=3" in lines(work / f"log/x.{j}.log")[-3]


def test_builtin_config_defaults_add_nothing(fake):
    env, work, sbatch_args = fake
    res = run([SLURM_PL, "--gpu", "0", "--num-threads", "1", "--mem", "0",
               "JOB=2:3", "log/x.JOB.log", "true"], env=env, cwd=work)
    assert res.returncode == 0, res.stderr
    args = sbatch_args()
    assert args == ["--export=PATH", "--job-name=x", f"--output={work}/log/q/x.%a.out",
                    "--array=2-3", "--parsable", f"{work}/log/q/x.sh"]
    # The array's own scheduler output is empty, so it is not kept.
    assert sorted(p.name for p in (work / "log/q").iterdir()) == [
        "x.2.status", "x.3.status", "x.sh"]


def test_config_file_parsing(fake):
    env, work, sbatch_args = fake
    conf = work / "my.conf"
    conf.write_text(
        "# site config\n"
        "command sbatch --export=ALL --ntasks-per-node=1\n"
        "option name=* --job-name $0\n"
        "option mem=* --mem-per-cpu $0\n"
        "option mem=0          # no option\n"
        "option num_threads=* --cpus-per-task $0\n"
        "option num_threads=1 --cpus-per-task 1\n"
        "default gpu=0\n"
        "option gpu=0 -p cpu\n"
        "option gpu=* -p gpu --gres=gpu:$0 -c $0  # as ESPnet's\n"
        "default time=2:00:00\n"
        "option time=* --time $0\n")
    res = run([SLURM_PL, "--config", conf, "--gpu", "2", "--name", "myjob", "--num-threads", "1",
               "JOB=1:2", "log/x.JOB.log", "true"], env=env, cwd=work)
    assert res.returncode == 0, res.stderr
    args = sbatch_args()
    opts = " ".join(args)
    assert args[:2] == ["--export=ALL", "--ntasks-per-node=1"]
    assert "-p gpu --gres=gpu:2 -c 2" in opts
    assert "--job-name myjob" in opts
    assert "--time 2:00:00" in opts                 # default
    assert "--cpus-per-task 1" in opts              # num_threads=1 has its own line
    assert "--mem-per-cpu" not in opts

    res = run([SLURM_PL, "--config", conf, "--mem", "2G", "--num-threads", "4",
               "--time=0:30:00", "log/y.log", "true"], env=env, cwd=work)
    assert res.returncode == 0, res.stderr
    opts = " ".join(sbatch_args())
    assert "-p cpu" in opts and "--gres" not in opts
    assert "--mem-per-cpu 2G" in opts and "--cpus-per-task 4" in opts
    assert "--time 0:30:00" in opts and "2:00:00" not in opts
    assert "--array=1-1" in opts
    check_log(work / "log/y.log", "true", 0)

    # Kaldi's default location: conf/slurm.conf in the working directory.
    (work / "conf").mkdir()
    (work / "conf/slurm.conf").write_text(conf.read_text())
    res = run([SLURM_PL, "log/z.log", "true"], env=env, cwd=work)
    assert res.returncode == 0, res.stderr
    assert "-p cpu" in " ".join(sbatch_args())


def test_config_errors(fake):
    env, work, _ = fake
    conf = work / "my.conf"
    conf.write_text("command sbatch\noption gpu=0\noption mem=* --mem $0\n")
    res = run([SLURM_PL, "--config", conf, "--foo", "1", "log/x.log", "true"], env=env, cwd=work)
    assert res.returncode == 1
    assert "--foo" in res.stderr and "not described" in res.stderr
    res = run([SLURM_PL, "--config", conf, "--gpu", "1", "log/x.log", "true"], env=env, cwd=work)
    assert res.returncode == 1 and "--gpu 1 is not allowed" in res.stderr
    res = run([SLURM_PL, "--config", work / "missing.conf", "log/x.log", "true"], env=env, cwd=work)
    assert res.returncode == 1 and "missing.conf" in res.stderr
    conf.write_text("option mem=* --mem $0\n")
    res = run([SLURM_PL, "--config", conf, "log/x.log", "true"], env=env, cwd=work)
    assert res.returncode == 1 and "no 'command' line" in res.stderr
    assert not (work / "x.log").exists()


def test_egs_config(fake):
    env, work, sbatch_args = fake
    res = run([SLURM_PL, "--config", EGS_CONF, "--gpu", "1", "--num-threads", "2",
               "JOB=1:2", "log/x.JOB.log", "true"], env=env, cwd=work)
    assert res.returncode == 0, res.stderr
    args = sbatch_args()
    assert args[0] == "--export=PATH"
    assert "--gres=gpu:1" in args and "--cpus-per-task 2" in " ".join(args)
    assert not any(a in ("-p", "--partition") or a.startswith("--partition=") for a in args)


def test_task_ended_by_scheduler_is_failed_with_reason(fake):
    env, work, _ = fake
    env = dict(env, FAKE_SKIP="2")       # task 2 never ran; scontrol says TIMEOUT
    res = run([SLURM_PL, "JOB=1:3", work / "log/x.JOB.log", "true"], env=env, cwd=work)
    assert res.returncode == 1
    err = res.stderr.splitlines()
    assert err[-1] == f"slurm.pl: 1 / 3 failed, log is in {work}/log/x.2.log"
    assert "JOB=2" in err[0] and "TIMEOUT" in err[0] and "TimeLimit" in err[0]
    assert "TIMEOUT" in (work / "log/x.2.log").read_text()
    check_log(work / "log/x.1.log", "true", 0)


def test_rejected_submission_fails_with_sbatch_message(fake):
    env, work, _ = fake
    env = dict(env, FAKE_SBATCH_FAIL="Batch job submission failed: "
                                     "More processors requested than permitted")
    res = run([SLURM_PL, "JOB=1:2", "log/x.JOB.log", "true"], env=env, cwd=work)
    assert res.returncode == 1
    assert "More processors requested than permitted" in res.stderr


def test_usage_errors(fake):
    env, work, _ = fake
    res = run([SLURM_PL, "JOB=1:2", "log/x.log", "true"], env=env, cwd=work)
    assert res.returncode == 1 and "does not contain 'JOB'" in res.stderr
    res = run([SLURM_PL, "--max-jobs-run", "0", "JOB=1:2", "log/x.JOB.log", "true"],
              env=env, cwd=work)
    assert res.returncode == 1
    res = run([SLURM_PL, "log/x.log"], env=env, cwd=work)
    assert res.returncode == 1 and "Usage" in res.stderr


def test_start_sh_without_root_does_nothing():
    if os.geteuid() == 0:
        # Run it as nobody; it must say why and exit 0.
        res = run(["runuser", "-u", "nobody", "--", "bash", START], timeout=30)
    else:
        res = run(["bash", START], timeout=30)
    assert res.returncode == 0
    assert "root" in res.stdout


# ------------------------------------------------------------ real cluster


def wait_for(pred, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out ({timeout} s) waiting for {what}")


def job_id_of(log):
    m = re.search(r"as Slurm job (\d+)_\d+", Path(log).read_text())
    return m.group(1)


def pid_alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def squeue_ids(env, jobid):
    res = run(["squeue", "-h", "-r", "-j", jobid, "-o", "%i"], env=env)
    return res.stdout.split() if res.returncode == 0 else []


def test_cluster_start_is_idempotent_and_quick(cluster):
    t0 = time.time()
    res = run(["bash", START], timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert time.time() - t0 < 5, res.stdout
    assert "is up" in res.stdout


def test_cluster_job_array(cluster, tmp_path):
    res = run([SLURM_PL, "JOB=1:4", tmp_path / "log/x.JOB.log",
               "echo", "JOB", ">", tmp_path / "out.JOB", "&&", "echo", "done", "JOB"],
              env=cluster, cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    for j in range(1, 5):
        assert (tmp_path / f"out.{j}").read_text() == f"{j}\n"
        body = check_log(tmp_path / f"log/x.{j}.log",
                         f"echo {j} > {tmp_path}/out.{j} && echo done {j}", 0)
        assert body == [f"done {j}"]
    # One array: all tasks share the Slurm job id.
    assert len({job_id_of(tmp_path / f"log/x.{j}.log") for j in range(1, 5)}) == 1


def test_cluster_max_jobs_run_one_at_a_time(cluster, tmp_path):
    res = run([SLURM_PL, "--max-jobs-run", "1", "JOB=1:3", tmp_path / "log/x.JOB.log",
               "date", "+%s.%N", ">", tmp_path / "t.JOB", ";", "sleep", "1", ";",
               "date", "+%s.%N", ">>", tmp_path / "t.JOB"],
              env=cluster, cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr
    spans = sorted(tuple(map(float, (tmp_path / f"t.{j}").read_text().split()))
                   for j in range(1, 4))
    for (s1, e1), (s2, e2) in zip(spans, spans[1:]):
        assert s2 >= e1, f"tasks overlapped: {spans}"


def test_cluster_failed_task_reported(cluster, tmp_path):
    res = run([SLURM_PL, "JOB=1:4", tmp_path / "log/x.JOB.log", "test", "JOB", "-ne", "3"],
              env=cluster, cwd=tmp_path, timeout=120)
    assert res.returncode == 1
    assert res.stderr == f"slurm.pl: 1 / 4 failed, log is in {tmp_path}/log/x.3.log\n"
    check_log(tmp_path / "log/x.3.log", "test 3 -ne 3", 1)
    check_log(tmp_path / "log/x.4.log", "test 4 -ne 3", 0)


def test_cluster_too_many_cpus_fails_at_once(cluster, tmp_path):
    n = max(64, 2 * int(cluster["TEST_CLUSTER_CPUS"]))
    t0 = time.time()
    res = run([SLURM_PL, "--num-threads", n, "JOB=1:2", tmp_path / "log/x.JOB.log", "true"],
              env=cluster, cwd=tmp_path, timeout=60)
    assert time.time() - t0 < 30
    assert res.returncode != 0
    assert "sbatch: error" in res.stderr, res.stderr


def test_cluster_sigterm_cancels_array(cluster, tmp_path):
    # Each task records the pid of the process that then sleeps.
    proc = subprocess.Popen(
        [str(SLURM_PL), "JOB=1:3", str(tmp_path / "log/x.JOB.log"),
         "bash", "-c", f"echo $$ > {tmp_path}/pid.JOB.tmp && mv {tmp_path}/pid.JOB.tmp "
                       f"{tmp_path}/pid.JOB && exec sleep 300"],
        env=cluster, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (tmp_path / "pid.1").exists(), 60, "task 1 to start")
        pids = [int(p.read_text()) for p in tmp_path.glob("pid.[0-9]")]
        jobid = job_id_of(tmp_path / "log/x.1.log")
        assert squeue_ids(cluster, jobid)
        assert all(pid_alive(p) for p in pids)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert f"cancelling Slurm job {jobid}" in err
    assert squeue_ids(cluster, jobid) == []
    wait_for(lambda: not any(pid_alive(p) for p in pids), 15, "the tasks' processes to end")


def test_cluster_cancelled_task_reported_with_reason(cluster, tmp_path):
    proc = subprocess.Popen(
        [str(SLURM_PL), "JOB=1:2", str(tmp_path / "log/x.JOB.log"),
         "if", "[", "JOB", "=", "2", "];", "then", "touch", str(tmp_path / "started"), ";",
         "sleep", "300;", "fi"],
        env=cluster, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (tmp_path / "started").exists(), 60, "task 2 to start")
        jobid = job_id_of(tmp_path / "log/x.2.log")
        res = run(["scancel", f"{jobid}_2"], env=cluster)
        assert res.returncode == 0, res.stderr
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1
    err = err.splitlines()
    assert err[-1] == f"slurm.pl: 1 / 2 failed, log is in {tmp_path}/log/x.2.log"
    assert any("JOB=2" in e and "CANCELLED" in e for e in err[:-1]), err
    assert "CANCELLED" in (tmp_path / "log/x.2.log").read_text()
    check_log(tmp_path / "log/x.1.log",
              "if [ 1 = 2 ]; then touch %s/started ; sleep 300; fi" % tmp_path, 0)


@pytest.mark.skipif(not os.environ.get("SPEECHDUMP_SLURM_SLOW"),
                    reason="takes ~80 s (Slurm's shortest time limit is 1 minute, "
                           "checked every 30 s); set SPEECHDUMP_SLURM_SLOW=1")
def test_cluster_time_limit_reported(cluster, tmp_path):
    res = run([SLURM_PL, "--time", "1", "JOB=1:2", tmp_path / "log/x.JOB.log",
               "[", "JOB", "=", "1", "]", "||", "sleep", "300"],
              env=cluster, cwd=tmp_path, timeout=200)
    assert res.returncode == 1
    err = res.stderr.splitlines()
    assert err[-1] == f"slurm.pl: 1 / 2 failed, log is in {tmp_path}/log/x.2.log"
    assert any("TIMEOUT" in e for e in err[:-1]), err
    assert "TIMEOUT" in (tmp_path / "log/x.2.log").read_text()


def test_cluster_gpu_tasks_see_their_own_gpu(cluster, tmp_path):
    gres = run(["sinfo", "-h", "-o", "%G"], env=cluster).stdout
    m = re.search(r"gpu:(?:[^:,\s]+:)?(\d+)", gres)
    if not m:
        pytest.skip("the local cluster has no GPUs")
    ngpu = int(m.group(1))
    n = max(2, ngpu)
    res = run([SLURM_PL, "--gpu", "1", f"JOB=1:{n}", tmp_path / "log/x.JOB.log",
               "echo", "${CUDA_VISIBLE_DEVICES-unset}", ">", tmp_path / "cvd.JOB",
               ";", "sleep", "2"],
              env=cluster, cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr
    seen = [(tmp_path / f"cvd.{j}").read_text().strip() for j in range(1, n + 1)]
    for s in seen:
        assert re.fullmatch(r"\d+", s), seen      # exactly one GPU each
