# shellcheck shell=bash
# shellcheck disable=SC2154  # device, cmd, log_stem: set by the stage that sources this file
# Helpers shared by the stages in scripts/ (sourced, not run).

log() {
    local fname=${BASH_SOURCE[1]##*/}
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*" >&2
}

# Exits unless $1 is a --device the workers take: cpu, cuda or cuda:N.
require_device() {
    if ! [[ $1 =~ ^(cpu|cuda|cuda:[0-9]+)$ ]]; then
        log "ERROR: --device must be cpu, cuda or cuda:N, got '$1'"
        exit 1
    fi
}

# Exits unless the python $1 imports speechdump.
require_speechdump() {
    if ! "$1" -c "import speechdump" 2>/dev/null; then
        log "ERROR: '$1' cannot import speechdump: source the recipe's path.sh (or make setup)"
        exit 1
    fi
}

# Takes the stage lock of out dir $1 (held on fd 9 by this shell and the jobs it launches, and
# released by the kernel when they end, however they end); exits if another stage holds it.
# With $2 (the stage and what it runs, e.g. "extract_ssl_feats.sh --toolkit fbank"), also
# claims the dir for it (claim_out_dir).
stage_lock() {
    mkdir -p "$1"
    exec 9>"$1/.lock"
    if ! flock -n 9; then
        log "ERROR: another stage is writing $1 (it holds $1/.lock); wait for it or pick another out_dir"
        exit 1
    fi
    if [ $# -ge 2 ]; then
        claim_out_dir "$1" "$2"
    fi
}

# Claims out dir $1 for $2 (a stage and what it runs): the first stage to write it records
# itself in $1/.stage; another stage, or the same one with another toolkit, is refused there,
# naming what wrote it (their split<N>/ job records would overwrite each other). Call with the
# stage lock of $1 held.
claim_out_dir() {
    local dir=$1 mine=$2 theirs
    if [ -f "$dir/.stage" ]; then
        theirs=$(<"$dir/.stage")
        if [ "$theirs" != "$mine" ]; then
            log "ERROR: $dir holds the outputs of $theirs (recorded in $dir/.stage); this is" \
                "$mine, whose job records would overwrite them: give it another out dir, or" \
                "remove $dir to start over"
            exit 1
        fi
    else
        printf '%s\n' "$mine" > "$dir/.stage"
    fi
}

# Prints, for each job of logs $1.1.log .. $1.$2.log that did not end with status 0, its last
# ERROR line, or the last lines of its log when it has none (a crash, a job killed by the
# launcher).
report_failed_jobs() {
    local stem=$1 nj=$2 n job_log reason
    for n in $(seq "$nj"); do
        job_log=$stem.$n.log
        if [ -f "$job_log" ] && grep -qE '^# (Ended \(code 0\)|Finished .* status 0$)' "$job_log"; then
            continue
        fi
        if [ ! -f "$job_log" ]; then
            echo "job $n: no log ($job_log): it never started" >&2
        elif reason=$(grep "^ERROR" "$job_log" | tail -n 1) && [ -n "$reason" ]; then
            echo "job $n ($job_log): $reason" >&2
        else
            echo "job $n ($job_log) ended with:" >&2
            grep -v '^#' "$job_log" | tail -n 5 | sed 's/^/    /' >&2
        fi
    done
}

# Runs "$@" as jobs 1..$nj through $cmd, logs in $log_stem.JOB.log; with $device cuda each job
# gets a GPU of its own (--gpu 1). A job that fails ends the stage with every failed job's
# reason on the console, and $bad_utterance_hint when one failed on a bad utterance. Uses the
# caller's cmd, nj, device and log_stem.
run_jobs() {
    local gpu_opt=()
    [ "$device" = cuda ] && gpu_opt=(--gpu 1)
    # $cmd is word-split on purpose: it may carry launcher options ("slurm.pl --mem 8G").
    # In the background so that SIGTERM/SIGINT reach this shell at once (bash defers traps
    # while a foreground child runs) and are passed on: the launcher then stops its jobs.
    $cmd "${gpu_opt[@]}" JOB=1:"$nj" "$log_stem.JOB.log" "$@" &
    local launcher=$! status=0
    # shellcheck disable=SC2064  # the launcher's pid is fixed now, on purpose
    trap "log 'interrupted: stopping the jobs'; kill -TERM $launcher 2>/dev/null; wait $launcher; exit 143" TERM INT
    wait "$launcher" || status=$?
    trap - TERM INT
    if [ "$status" -ne 0 ]; then
        log "ERROR: $(basename "$log_stem") jobs failed; what they said:"
        report_failed_jobs "$log_stem" "$nj"
        if [ -n "${bad_utterance_hint:-}" ] && grep -qs "^ERROR: utterance '" "$log_stem".*.log; then
            log "$bad_utterance_hint"
        fi
        exit 1
    fi
}
