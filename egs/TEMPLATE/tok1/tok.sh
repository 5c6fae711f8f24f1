#!/usr/bin/env bash
# Feature and token recipe template: each recipe's run.sh calls this with its sets and options.
# Features: <dumpdir>/<feats_tag>/<set>/<feats_tag>[_layer<N>].scp (+ utt2num_frames);
# k-means on the first set: <expdir>/kmeans_<K>; tokens: <dumpdir>/tokens_<K>/<set>/tokens(.scp).
set -euo pipefail

# Recipes link this file, so its own folder is found through the link.
. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../data_stages.sh"
SECONDS=0

stage=1              # first stage to run
stop_stage=100       # last stage to run (past the recipe's last stage: to the end)
last_stage=5         # the recipe's last stage: a recipe that stops at the features (ssl1)
                     # sets 3, so that --help lists its stages only and --stage 4 is an error
nj=4                 # jobs per set
sets=                # data sets under <datadir>; k-means learns on the first
datadir=data
dumpdir=dump
expdir=exp
local_data_opts=     # options passed to local/data.sh
fix_data=true        # run utils/fix_data_dir.sh on each set
skip_bad=false       # true: unreadable audio is listed (stage 2) and skipped (stage 3, bad_utts)
toolkit=fbank        # a feature toolkit (pyscripts/extract.py --help lists them)
model=               # its model, where it takes one (e.g. a local transformers model directory)
extractor_opts=      # the toolkit's own options, e.g. "--layers 6" for an SSL model
stream=              # the feature stream k-means learns on (e.g. layer6); empty: the only one
feats_tag=           # default: the toolkit name
feats_opts=          # more options for scripts/extract_ssl_feats.sh
n_clusters=100       # k-means clusters (token vocabulary)
portion=1.0          # portion of the first set's utterances k-means learns on
seed=0
device=cpu

# The usage, with the stages up to --last_stage and the values the options have when --help is
# read (a recipe's own defaults come before its user's options): parse_options.sh calls it.
print_help() {
    local stages=(
        "  1: local/data.sh \$local_data_opts <datadir>: Kaldi data dirs <datadir>/<set>"
        "  2: utils/fix_data_dir.sh (with --fix_data true), validate_data_dir.sh, utt2dur"
        "  3: features (scripts/extract_ssl_feats.sh): fbank, mfcc, SSL layer(s), ..."
        "  4: k-means on the first set (scripts/learn_kmeans.sh)"
        "  5: tokens of every set (scripts/dump_tokens.sh)")
    printf '%s\n' "Usage: $0 --sets \"<set> ...\" [options]" "Stages:" \
        "${stages[@]:0:$last_stage}" "Options:" \
        "  --stage <$stage> --stop_stage <$stop_stage> --nj <$nj> --sets <names>" \
        "  --datadir <$datadir> --dumpdir <$dumpdir> --local_data_opts <opts>" \
        "  --fix_data <$fix_data> --skip_bad <$skip_bad> --toolkit <$toolkit> --model <dir>" \
        "  --extractor_opts <opts> --feats_tag <name> --feats_opts <opts> --device <$device>"
    if [ "$last_stage" -ge 4 ]; then
        printf '%s\n' "  --expdir <$expdir> --stream <name> --n_clusters <$n_clusters>" \
            "  --portion <$portion> --seed <$seed>"
    fi
}

# shellcheck source=/dev/null  # the recipe's own path.sh (TEMPLATE has none)
. ./path.sh
# shellcheck source=/dev/null  # the recipe's own cmd.sh: it sets extract_cmd
. ./cmd.sh
. utils/parse_options.sh
if ! [[ $last_stage =~ ^[1-5]$ ]]; then
    log "ERROR: --last_stage must be 1 to 5 (this template's stages), got '$last_stage'" >&2
    exit 1
fi
if [ $# -ne 0 ] || [ -z "$sets" ]; then
    print_help >&2
    exit 1
fi
check_stages "$last_stage"
uses_speakers=false  # for stage 2: the data dirs need no utt2spk
feats_tag=${feats_tag:-$toolkit}
first_set=${sets%% *}

# The file stem of the feature stream the tokens are learned on: <feats_tag>_<stream>, or the
# only stream stage 3 wrote.
feats_stem() {
    if [ -n "$stream" ]; then
        echo "${feats_tag}_$stream"
        return
    fi
    local dir=$dumpdir/$feats_tag/$first_set scps=() scp
    for scp in "$dir/$feats_tag.scp" "$dir/$feats_tag"_*.scp; do
        [ -f "$scp" ] && scps+=("$(basename "$scp")")
    done
    if [ "${#scps[@]}" -ne 1 ]; then
        log "ERROR: $dir holds ${#scps[@]} feature streams (${scps[*]:-none: run stage 3});" \
            "name the one to learn tokens on with --stream"
        exit 1
    fi
    echo "${scps[0]%.scp}"
}

data_stages

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
    for set in $sets; do
        log "stage 3: $toolkit features of $datadir/$set -> $dumpdir/$feats_tag/$set"
        # shellcheck disable=SC2086,SC2154  # opts split on purpose; extract_cmd: from cmd.sh
        scripts/extract_ssl_feats.sh --cmd "$extract_cmd" --nj "$nj" --toolkit "$toolkit" \
            --model "$model" --extractor_opts "$extractor_opts" --device "$device" \
            --tag "$feats_tag" --skip_bad "$skip_bad" $feats_opts \
            "$datadir/$set" "$dumpdir/$feats_tag/$set"
    done
fi

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
    feats_stem=$(feats_stem)
    km_dir=$expdir/kmeans_${feats_stem}_$n_clusters
    log "stage 4: k-means ($n_clusters clusters) on $feats_stem of $first_set -> $km_dir"
    scripts/learn_kmeans.sh --cmd "$extract_cmd" --n_clusters "$n_clusters" \
        --portion "$portion" --seed "$seed" \
        "$dumpdir/$feats_tag/$first_set/$feats_stem.scp" "$km_dir"
fi

if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ]; then
    feats_stem=$(feats_stem)
    km_dir=$expdir/kmeans_${feats_stem}_$n_clusters
    for set in $sets; do
        out=$dumpdir/tokens_${feats_stem}_$n_clusters/$set
        log "stage 5: tokens of $set -> $out"
        scripts/dump_tokens.sh --cmd "$extract_cmd" --nj "$nj" --device "$device" \
            "$dumpdir/$feats_tag/$set/$feats_stem.scp" "$km_dir" "$out"
    done
fi
log "finished in ${SECONDS} s"
