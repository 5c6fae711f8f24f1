#!/usr/bin/env bash
# Speaker-embedding recipe template: each recipe's run.sh calls this with its sets and options.
# Outputs land where ESPnet's TTS recipes read them (--use_spk_embed true):
#   <dumpdir>/<tag>/<set>/<tag>.scp and spk_<tag>.scp
set -euo pipefail

# Recipes link this file, so its own folder is found through the link.
. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../data_stages.sh"
SECONDS=0

stage=1              # first stage to run (1 to 5)
stop_stage=100       # last stage to run (past 5: to the end)
nj=4                 # extraction jobs per set
sets=                # data sets under <datadir>, e.g. "train dev test"
datadir=data
dumpdir=dump
local_data_opts=     # options passed to local/data.sh
fix_data=true        # run utils/fix_data_dir.sh on each set (drops ids missing from any file)
skip_bad=false       # true: unreadable audio is listed (stage 2) and skipped (stage 3, bad_utts)
toolkit=resemblyzer
model=
device=cpu
tag=
extractor_opts=      # the toolkit's own options, e.g. "--num_crops 5"
extract_opts=        # more options for scripts/extract_spk_embed.sh
projection=tsne      # report projection: tsne or pca
score_set=           # stage 5: the set whose trial lists (<datadir>/<set>/trials/*) are scored;
                     # empty: no scoring
cohort_set=          # stage 5: the set whose speaker embeddings are the cohort of AS-norm
                     # (scored both ways then); empty: no normalisation
score_opts=          # more options for scripts/score_trials.sh, e.g. "--top_n 300"

help_message="Usage: $0 --sets \"<set> ...\" [options]
Stages:
  1: local/data.sh \$local_data_opts <datadir>: Kaldi data dirs <datadir>/<set>
  2: utils/fix_data_dir.sh (with --fix_data true), validate_data_dir.sh, utt2dur
  3: speaker embeddings: <dumpdir>/<tag>/<set>/<tag>.scp and spk_<tag>.scp
  4: report: EER, same/different-speaker cosines, projection and heatmap PNG
  5: with --score_set: each trial list of <datadir>/<score_set>/trials/ scored, and AS-normalised
     against --cohort_set's speakers when given: <dumpdir>/<tag>/<score_set>/scores/<list>/
     (<list>.none/ and <list>.asnorm/ with a cohort): scores, results, det.png
Options:
  --stage <$stage> --stop_stage <$stop_stage> --nj <$nj> --sets <names> --datadir <$datadir>
  --dumpdir <$dumpdir> --local_data_opts <opts> --fix_data <$fix_data> --skip_bad <$skip_bad>
  --toolkit <$toolkit> --model <path> --device <$device> --tag <name>
  --extractor_opts <opts> --extract_opts <opts> --projection <$projection>
  --score_set <set> --cohort_set <set> --score_opts <opts>"

. ./path.sh
# shellcheck source=/dev/null  # the recipe's own cmd.sh: it sets extract_cmd
. ./cmd.sh
. utils/parse_options.sh
if [ $# -ne 0 ] || [ -z "$sets" ]; then
    echo "$help_message" >&2
    exit 1
fi
check_stages 5
uses_speakers=true   # for stage 2: the data dirs need utt2spk
tag=${tag:-$toolkit}
# Stage 5's sets are extracted by stage 3: checked now, not after the extraction.
if [ "$stop_stage" -ge 5 ]; then
    for set in $score_set $cohort_set; do
        if ! [[ " $sets " == *" $set "* ]]; then
            log "ERROR: --score_set and --cohort_set must be among --sets ($sets); $set is not" >&2
            exit 1
        fi
    done
    if [ -n "$cohort_set" ] && [ -z "$score_set" ]; then
        log "ERROR: --cohort_set $cohort_set needs --score_set (the set the trials name)" >&2
        exit 1
    fi
fi

data_stages

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
    for set in $sets; do
        log "stage 3: speaker embeddings of $datadir/$set with $toolkit -> $dumpdir/$tag/$set"
        # shellcheck disable=SC2086,SC2154  # opts split on purpose; extract_cmd: from cmd.sh
        scripts/extract_spk_embed.sh --config conf/spk_embed.conf --cmd "$extract_cmd" \
            --nj "$nj" --toolkit "$toolkit" --model "$model" --extractor_opts "$extractor_opts" \
            --device "$device" --tag "$tag" --skip_bad "$skip_bad" $extract_opts \
            "$datadir/$set" "$dumpdir/$tag/$set"
    done
fi

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
    for set in $sets; do
        out=$dumpdir/$tag/$set
        log "stage 4: report on $out"
        for f in "$out/$tag.scp" "$out/spk_$tag.scp"; do
            if [ ! -f "$f" ]; then
                log "ERROR: $f is missing: run stage 3 first (./run.sh --stage 3, with the" \
                    "same --dumpdir, --toolkit and --tag)" >&2
                exit 1
            fi
        done
        python3 pyscripts/spk_report.py --projection "$projection" --title "$tag on $set" \
            "$out/$tag.scp" "$out/spk_$tag.scp" "$datadir/$set/utt2spk" "$out/report/$tag"
        log "outputs: $out/$tag.scp (utterances), $out/spk_$tag.scp (speakers)," \
            "$out/report/$tag.png"
    done
fi
if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ] && [ -n "$score_set" ]; then
    lists=()
    if [ -d "$datadir/$score_set/trials" ]; then
        mapfile -t lists < <(find "$datadir/$score_set/trials" -maxdepth 1 -type f | LC_ALL=C sort)
    fi
    if [ ${#lists[@]} -eq 0 ]; then
        log "ERROR: no trial lists in $datadir/$score_set/trials/ (local/data.sh writes them)" >&2
        exit 1
    fi
    embed=$dumpdir/$tag/$score_set/$tag.scp
    cohort=${cohort_set:+$dumpdir/$tag/$cohort_set/spk_$tag.scp}
    for f in "$embed" ${cohort:+"$cohort"}; do
        if [ ! -f "$f" ]; then
            log "ERROR: $f is missing: run stage 3 first (./run.sh --stage 3, with the same" \
                "--dumpdir, --toolkit and --tag)" >&2
            exit 1
        fi
    done
    for list in "${lists[@]}"; do
        # Raw scores, and with a cohort the AS-normalised ones beside them.
        for norm in none ${cohort:+asnorm}; do
            out=$dumpdir/$tag/$score_set/scores/${list##*/}${cohort:+.$norm}
            log "stage 5: scoring $list with $tag, norm $norm"
            # shellcheck disable=SC2086  # options split on purpose
            scripts/score_trials.sh --norm "$norm" ${cohort:+--cohort "$cohort"} \
                --data_dir "$datadir/$score_set" --title "${list##*/}: $tag, norm $norm" \
                $score_opts "$list" "$embed" "$embed" "$out"
        done
    done
fi
log "finished in ${SECONDS} s"
