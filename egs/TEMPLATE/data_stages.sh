# Sourced by the recipe templates (spk1/spk.sh, tok1/tok.sh): their log() and the two stages
# every recipe starts with. Uses the caller's stage, stop_stage, sets, datadir,
# local_data_opts and fix_data.

log() {
    local fname=${BASH_SOURCE[1]##*/}
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*"
}

data_stages() {
    if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
        log "stage 1: data preparation"
        # shellcheck disable=SC2086  # options are word-split on purpose
        local/data.sh $local_data_opts "$datadir"
    fi

    if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
        local set
        for set in $sets; do
            log "stage 2: checking $datadir/$set"
            [ "$fix_data" = true ] && utils/fix_data_dir.sh "$datadir/$set"
            utils/validate_data_dir.sh --no-feats --no-text "$datadir/$set"
            [ -f "$datadir/$set/utt2dur" ] || python3 pyscripts/get_utt2dur.py "$datadir/$set"
        done
    fi
}
