# Steps shared by the extraction stages (sourced, not run). The caller sets root, data, out, nj,
# cmd, tag, device, python and stage_start, then calls, in order:
#   extract_stage_prepare            checks the data dir, lists the utterances of text, splits them
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
    local f
    for f in wav.scp utt2spk; do
        [ -f "$data/$f" ] || { log "ERROR: $data/$f is missing"; exit 1; }
    done
    # text may name fewer or other ids than wav.scp (only its ids are extracted, the others
    # are reported by the merge), but it is read as a sorted UTF-8 table, so it is checked as one.
    local text_check=--no-text
    [ -f "$data/text" ] && text_check=--any-text-ids
    if ! validate_data_dir.sh "$text_check" --no-feats "$data" >/dev/null; then
        log "ERROR: $data is not a valid data dir (the line above says what is wrong); nothing" \
            "was written. utils/fix_data_dir.sh $data sorts its files and drops duplicate ids" \
            "and ids missing from some of them"
        exit 1
    fi
    mkdir -p "$out/log"
    # One stage per output dir: the lock is held by this shell and the jobs it launches, and
    # released by the kernel when they end, however they end.
    exec 9>"$out/.lock"
    if ! flock -n 9; then
        log "ERROR: another stage is writing $out (it holds $out/.lock); wait for it or pick another out_dir"
        exit 1
    fi

    # The utterance list is segments' when there is one; only ids of text are extracted.
    if [ -f "$data/segments" ]; then source_list=$data/segments; else source_list=$data/wav.scp; fi
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

    split=$out/split$nj
    mkdir -p "$split"
    local dur_opt=() parts=() n
    [ -f "$data/utt2dur" ] && dur_opt=(--utt2dur "$data/utt2dur")
    for n in $(seq "$nj"); do parts+=("$split/input.$n"); done
    split_scp.pl "${dur_opt[@]}" "$todo" "${parts[@]}"
    if [ -f "$data/segments" ]; then
        job_input=(--segments "$split/input.JOB" "$data/wav.scp")
    else
        job_input=("$split/input.JOB")
    fi
}

extract_stage_run() {
    local gpu_opt=()
    [ "$device" = cuda ] && gpu_opt=(--gpu 1)
    log "extracting $num_utts utterances in $nj jobs (logs: $out/log/extract.*.log)"
    # $cmd is word-split on purpose: it may carry launcher options ("slurm.pl --mem 8G").
    # In the background so that SIGTERM/SIGINT reach this shell at once (bash defers traps
    # while a foreground child runs) and are passed on: the launcher then stops its jobs.
    $cmd "${gpu_opt[@]}" JOB=1:"$nj" "$out/log/extract.JOB.log" \
        "$python" "$root/pyscripts/extract.py" --tag "$tag" --device "$device" "$@" \
        "${job_input[@]}" "$split" JOB &
    local launcher=$! status=0
    trap 'log "interrupted: stopping the jobs"; kill -TERM '"$launcher"' 2>/dev/null; wait '"$launcher"'; exit 143' TERM INT
    wait "$launcher" || status=$?
    trap - TERM INT
    if [ "$status" -ne 0 ]; then
        log "ERROR: extraction failed; the errors in the job logs:"
        grep -h "^ERROR" "$out"/log/extract.*.log | head -n 20 >&2 || true
        exit 1
    fi
}

extract_stage_merge() {
    log "merging $nj jobs, aligning with ${text_opt[1]:-$source_list}"
    "$python" "$root/pyscripts/merge_outputs.py" --tag "$tag" --nj "$nj" \
        --source_ids "$source_list" "${text_opt[@]}" --utt2spk "$data/utt2spk" \
        --start_time "$stage_start" "$@" "$split" "$out"
}
