# shellcheck shell=bash
# shellcheck disable=SC2154  # stage, sets, ... are set by the template that sources this file
# Sourced by the recipe templates (spk1/spk.sh, tok1/tok.sh): their log(), the check of
# --stage/--stop_stage and the two stages every recipe starts with. Uses the caller's stage,
# stop_stage, sets, datadir, local_data_opts, fix_data, skip_bad and uses_speakers (false: the
# data dirs need no utt2spk).

log() {
    local fname=${BASH_SOURCE[1]##*/}
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*"
}

# Exits unless --stage is one of the recipe's stages 1..$1 and --stop_stage (a number; past the
# last stage it means "to the end", as the default 100 does) is not before it; then caps
# stop_stage at $1.
check_stages() {
    local last=$1 opt
    for opt in stage stop_stage; do
        if ! [[ ${!opt} =~ ^[0-9]+$ ]]; then
            log "ERROR: --$opt must be a stage number, got '${!opt}' (--help lists the stages)" >&2
            exit 1
        fi
    done
    if [ "$stage" -lt 1 ] || [ "$stage" -gt "$last" ]; then
        log "ERROR: --stage $stage: this recipe has stages 1 to $last (--help lists them)" >&2
        exit 1
    fi
    if [ "$stop_stage" -lt "$stage" ]; then
        log "ERROR: --stop_stage $stop_stage is before --stage $stage: no stage would run" >&2
        exit 1
    fi
    [ "$stop_stage" -le "$last" ] || stop_stage=$last
}

data_stages() {
    if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
        log "stage 1: data preparation"
        # shellcheck disable=SC2086  # options are word-split on purpose
        local/data.sh $local_data_opts "$datadir"
    fi

    if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
        local set spk_opt=()
        [ "$uses_speakers" = true ] || spk_opt=(--spk-optional)
        for set in $sets; do
            log "stage 2: checking $datadir/$set"
            if [ "$fix_data" = true ]; then
                utils/fix_data_dir.sh "${spk_opt[@]}" "$datadir/$set"
            fi
            utils/validate_data_dir.sh --no-feats --no-text "${spk_opt[@]}" "$datadir/$set"
            if [ ! -f "$datadir/$set/utt2dur" ]; then
                python3 pyscripts/get_utt2dur.py --skip_bad "$skip_bad" "$datadir/$set"
            fi
        done
    fi
}
