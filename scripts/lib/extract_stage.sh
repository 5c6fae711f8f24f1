# shellcheck shell=bash
# shellcheck disable=SC2154  # root, data, out, ...: set by the stage that sources this file
# Steps shared by the extraction stages (sourced, not run). The caller sets root, data, out, nj,
# cmd, tag, device, python, stage_start, stage_kind (speaker or features: what the stage can
# take), toolkit, model, dtype, precision, cpu_layout, compress and extractor_opts (the
# toolkit's own options, passed through word-split), then calls, in order:
#   extract_stage_prepare            pre-flight of the toolkit and its options (nothing written
#                                    when it fails), checks the data dir, lists the utterances
#                                    of text, splits them
#   extract_stage_run <worker opts>  runs pyscripts/extract.py per job through $cmd
#   extract_stage_merge <merge opts> merges, aligns with text and checks (pyscripts/merge_outputs.py)

. "$root/scripts/lib/common.sh"

extract_stage_prepare() {
    export PATH="$root/utils:$PATH"
    # Kaldi launchers (run.pl, queue.pl, slurm.pl) hand words without whitespace to a shell
    # verbatim, so a path holding shell syntax would run as code: refuse it.
    local path meta=$'[$`;&|<>()\\\\"\'!]'
    for path in "$data" "$out"; do
        if [[ $path =~ $meta ]]; then
            log "ERROR: '$path' holds shell metacharacters (\$ \` ; & | < > ( ) \\ \" ' !)," \
                "which launchers would run as code; rename it or use a symlink"
            exit 1
        fi
    done
    require_device "$device"
    require_speechdump "$python"
    # shellcheck disable=SC2206  # the toolkit's options are word-split on purpose
    extractor_args=(--toolkit "$toolkit" ${model:+--model "$model"} --dtype "$dtype"
                    --precision "$precision" --cpu_layout "$cpu_layout" --compress "$compress"
                    $extractor_opts)
    local streams
    fingerprint=$(mktemp)
    # shellcheck disable=SC2064  # the file's name is fixed now; gone once moved into split<N>
    trap "rm -f '$fingerprint'" EXIT
    if ! streams=$("$python" "$root/pyscripts/check_extraction.py" --stage "$stage_kind" \
            --fingerprint_to "$fingerprint" "${extractor_args[@]}"); then
        rm -f "$fingerprint"
        log "refused before any job: nothing was written; the line above says why" \
            "(pyscripts/extract.py --toolkit $toolkit --help lists its options)"
        exit 1
    fi
    log "$streams"
    # Only the speaker stage needs speakers; the others need wav.scp (and segments if any).
    local f spk_check=(--spk-optional --no-spk-sort)
    [ "$stage_kind" = speaker ] && spk_check=(--no-spk-sort)
    [ -f "$data/wav.scp" ] || { log "ERROR: $data/wav.scp is missing"; exit 1; }
    if [ "$stage_kind" = speaker ] && [ ! -f "$data/utt2spk" ]; then
        if [ -f "$data/segments" ]; then f=segments; else f=wav.scp; fi
        log "ERROR: $data/utt2spk is missing: the speaker stage averages each speaker's" \
            "utterances. Without speaker labels, make each utterance its own speaker:" \
            "awk '{print \$1, \$1}' $data/$f > $data/utt2spk &&" \
            "utils/utt2spk_to_spk2utt.pl $data/utt2spk > $data/spk2utt"
        exit 1
    fi
    # text may name fewer or other ids than wav.scp (only its ids are extracted, the others
    # are reported by the merge), but it is read as a sorted UTF-8 table, so it is checked as one.
    local text_check=--no-text
    [ -f "$data/text" ] && text_check=--any-text-ids
    if ! validate_data_dir.sh "$text_check" --no-feats "${spk_check[@]}" "$data" >/dev/null; then
        log "ERROR: $data is not a valid data dir (the line above says what is wrong and what" \
            "repairs it); nothing was written"
        exit 1
    fi
    # The utterance list is segments' when there is one; only ids of text are extracted, and
    # every one of them needs audio: checked before anything is written or run.
    if [ -f "$data/segments" ]; then source_list=$data/segments; else source_list=$data/wav.scp; fi
    if [ -f "$data/text" ]; then
        local missing num fix=utils/fix_data_dir.sh
        missing=$(filter_scp.pl --exclude "$source_list" "$data/text" | cut -d' ' -f1)
        if [ -n "$missing" ]; then
            num=$(wc -l <<< "$missing")
            missing=$(head -n 20 <<< "$missing" | paste -sd' ')
            [ "$num" -gt 20 ] && missing+=" ..."
            [ -f "$data/utt2spk" ] || fix+=" --spk-optional"
            log "ERROR: $num ids have no output: $missing (they are in $data/text but not in" \
                "$source_list: no audio); nothing was written. Remove them from text, or run" \
                "$fix $data (it keeps only the ids present in every file)"
            exit 1
        fi
    fi
    mkdir -p "$out/log"
    stage_lock "$out" "${0##*/} --toolkit $toolkit"

    text_opt=()
    rm -f "$out/$tag.scp" "$out/$tag"_*.scp "$out/spk_$tag.scp"  # stale until merged again
    local todo=$out/todo.list
    if [ -f "$data/text" ]; then
        text_opt=(--text "$data/text")
        filter_scp.pl "$data/text" "$source_list" > "$todo"
    else
        cp "$source_list" "$todo"
    fi
    num_utts=$(wc -l < "$todo")
    if [ "$num_utts" -eq 0 ]; then
        log "ERROR: no utterance of $source_list is in $data/text"
        exit 1
    fi
    if [ "$nj" -gt "$num_utts" ]; then
        log "only $num_utts utterances: using $num_utts jobs instead of $nj"
        nj=$num_utts
    fi

    if [ "$num_threads" = auto ]; then
        num_threads=$(threads_per_job)
    fi
    split=$out/split$nj
    mkdir -p "$split"
    # The model's fingerprint, hashed once for all the jobs.
    mv "$fingerprint" "$split/model_fingerprint.json"
    if [ "$force" = true ]; then
        log "--force true: every job runs again"
        rm -f "$split"/done.*
    fi
    local split_opts=() parts=() n how
    [ -f "$data/utt2dur" ] && split_opts+=(--utt2dur "$data/utt2dur")
    [ -f "$data/segments" ] && split_opts+=(--wav_scp "$data/wav.scp")
    for n in $(seq "$nj"); do parts+=("$split/input.$n"); done
    # Like split_scp.pl, and a shard's utterances go to one job in the order they lie there.
    how=$("$python" "$root/pyscripts/split_jobs.py" "${split_opts[@]}" "$todo" "${parts[@]}") ||
        { log "ERROR: splitting $todo into $nj jobs failed (the line above says why)"; exit 1; }
    [ -z "$how" ] || log "$how"
    if [ -f "$data/segments" ]; then
        job_input=(--segments "$split/input.JOB" "$data/wav.scp")
    else
        job_input=("$split/input.JOB")
    fi
}

extract_stage_run() {
    log "extracting $num_utts utterances in $nj jobs (logs: $out/log/extract.*.log; a job" \
        "whose inputs, options, model and libraries are unchanged is reused)"
    local log_stem=$out/log/extract
    local bad_utterance_hint="to list bad utterances in $out/bad_utts and keep everything else,"
    bad_utterance_hint+=" rerun with --skip_bad true: finished jobs are reused, not redone"
    run_jobs "$python" "$root/pyscripts/extract.py" --tag "$tag" --device "$device" \
        --model_fingerprint "$split/model_fingerprint.json" "${extractor_args[@]}" "$@" \
        "${job_input[@]}" "$split" JOB
}

extract_stage_merge() {
    local utt2spk_opt=()  # speakers are counted where the data dir has them
    [ -f "$data/utt2spk" ] && utt2spk_opt=(--utt2spk "$data/utt2spk")
    log "merging $nj jobs, aligning with ${text_opt[1]:-$source_list}"
    "$python" "$root/pyscripts/merge_outputs.py" --tag "$tag" --nj "$nj" \
        --source_ids "$source_list" "${text_opt[@]}" "${utt2spk_opt[@]}" \
        --start_time "$stage_start" "$@" "$split" "$out"
}

# The CPU cores of each job for --num_threads auto. With run.pl the jobs share
# this machine: its cores (those this shell may run on) divided among the jobs that run at
# once ($nj, or fewer with --max-jobs-run), at least one, so that jobs never oversubscribe it.
# Any other launcher gives each job CPUs of its own (slurm.pl: --num-threads, 1 by default):
# 0 makes the job take the CPUs it may run on.
threads_per_job() {
    local launcher=${cmd%% *} at_once=$nj max cores
    if [ "${launcher##*/}" != run.pl ]; then
        log "each job computes on the CPUs the launcher gives it"
        echo 0
        return
    fi
    max=$(sed -n 's/.*--max-jobs-run[ =]\([0-9][0-9]*\).*/\1/p' <<<"$cmd")
    if [ -n "$max" ] && [ "$max" -gt 0 ] && [ "$max" -lt "$at_once" ]; then
        at_once=$max
    fi
    cores=$(nproc)
    local threads=$((cores / at_once > 0 ? cores / at_once : 1))
    log "each job computes on $threads core(s): $cores cores, $at_once job(s) at once"
    echo "$threads"
}

# --help: the stage's usage, then the options of the toolkit it would run (--toolkit as given
# on the command line, else the stage's default). Call before parse_options.sh.
stage_help() {
    local arg prev="" want=false tk=$toolkit py=$python
    for arg in "$@"; do
        case $prev in --toolkit) tk=$arg ;; --python) py=$arg ;; esac
        case $arg in
            --help | -h) want=true ;;
            --toolkit=*) tk=${arg#--toolkit=} ;;
            --python=*) py=${arg#--python=} ;;
        esac
        prev=$arg
    done
    $want || return 0
    printf '%s\n' "$help_message" >&2
    if ! "$py" -c "import speechdump, torch" 2>/dev/null; then
        echo "(--toolkit $tk's own options are listed by a Python that imports speechdump:" \
            "source the recipe's path.sh, or give --python)" >&2
        exit 0
    fi
    echo "Options of --toolkit $tk, given in --extractor_opts \"...\":" >&2
    "$py" "$root/pyscripts/extract.py" --toolkit "$tk" --help \
        | sed -n '/^options of --toolkit/,$p' | tail -n +2 >&2
    exit 0
}
