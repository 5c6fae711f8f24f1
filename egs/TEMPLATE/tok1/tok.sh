#!/usr/bin/env bash
# Feature and token recipe template: each recipe's run.sh calls this with its sets and options.
# Features: <dumpdir>/<feats_tag>/<set>/<feats_tag>[_layer<N>].scp (+ utt2num_frames);
# k-means on the first set: <expdir>/kmeans_<K>; tokens: <dumpdir>/tokens_<K>/<set>/tokens(.scp).
set -euo pipefail

# Recipes link this file, so its own folder is found through the link.
. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../data_stages.sh"
SECONDS=0

stage=1              # first stage to run
stop_stage=100       # last stage to run
nj=4                 # jobs per set
sets=                # data sets under <datadir>; k-means learns on the first
datadir=data
dumpdir=dump
expdir=exp
local_data_opts=     # options passed to local/data.sh
fix_data=true        # run utils/fix_data_dir.sh on each set
toolkit=fbank        # ssl (with --model), fbank or mfcc
model=               # ssl: a local transformers model directory
layer=6              # ssl: the layer the tokens are learned on
feats_tag=           # default: the toolkit name
feats_opts=          # more options for scripts/extract_ssl_feats.sh
n_clusters=100       # k-means clusters (token vocabulary)
portion=1.0          # portion of the first set's utterances k-means learns on
seed=0
device=cpu

help_message="Usage: $0 --sets \"<set> ...\" [options]
Stages:
  1: local/data.sh \$local_data_opts <datadir>: Kaldi data dirs <datadir>/<set>
  2: utils/fix_data_dir.sh (with --fix_data true), validate_data_dir.sh, utt2dur
  3: features (scripts/extract_ssl_feats.sh): SSL layer(s), fbank or mfcc
  4: k-means on the first set (scripts/learn_kmeans.sh)
  5: tokens of every set (scripts/dump_tokens.sh)
Options:
  --stage <$stage> --stop_stage <$stop_stage> --nj <$nj> --sets <names> --datadir <$datadir>
  --dumpdir <$dumpdir> --expdir <$expdir> --local_data_opts <opts> --fix_data <$fix_data>
  --toolkit <$toolkit> --model <dir> --layer <$layer> --feats_tag <name> --feats_opts <opts>
  --n_clusters <$n_clusters> --portion <$portion> --seed <$seed> --device <$device>"

. ./path.sh
. ./cmd.sh
. utils/parse_options.sh
if [ $# -ne 0 ] || [ -z "$sets" ]; then
    echo "$help_message" >&2
    exit 1
fi
feats_tag=${feats_tag:-$toolkit}
feats_stem=$feats_tag
layer_opts=()
if [ "$toolkit" = ssl ]; then
    feats_stem=${feats_tag}_layer$layer
    layer_opts=(--layers "$layer")
fi
km_dir=$expdir/kmeans_${feats_stem}_$n_clusters
first_set=${sets%% *}

data_stages

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
    for set in $sets; do
        log "stage 3: $toolkit features of $datadir/$set -> $dumpdir/$feats_tag/$set"
        # shellcheck disable=SC2086
        scripts/extract_ssl_feats.sh --cmd "$extract_cmd" --nj "$nj" --toolkit "$toolkit" \
            --model "$model" "${layer_opts[@]}" --device "$device" --tag "$feats_tag" \
            $feats_opts "$datadir/$set" "$dumpdir/$feats_tag/$set"
    done
fi

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
    log "stage 4: k-means ($n_clusters clusters) on $feats_stem of $first_set -> $km_dir"
    scripts/learn_kmeans.sh --cmd "$extract_cmd" --n_clusters "$n_clusters" \
        --portion "$portion" --seed "$seed" \
        "$dumpdir/$feats_tag/$first_set/$feats_stem.scp" "$km_dir"
fi

if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ]; then
    for set in $sets; do
        out=$dumpdir/tokens_${feats_stem}_$n_clusters/$set
        log "stage 5: tokens of $set -> $out"
        scripts/dump_tokens.sh --cmd "$extract_cmd" --nj "$nj" --device "$device" \
            "$dumpdir/$feats_tag/$set/$feats_stem.scp" "$km_dir" "$out"
    done
fi
log "finished in ${SECONDS} s"
