#!/usr/bin/env bash
# Speaker-embedding recipe template: each recipe's run.sh calls this with its sets and options.
# Outputs land where ESPnet's TTS recipes read them (--use_spk_embed true):
#   <dumpdir>/<tag>/<set>/<tag>.scp and spk_<tag>.scp
set -euo pipefail

# Recipes link this file, so its own folder is found through the link.
. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../data_stages.sh"
SECONDS=0

stage=1              # first stage to run
stop_stage=100       # last stage to run
nj=4                 # extraction jobs per set
sets=                # data sets under <datadir>, e.g. "train dev test"
datadir=data
dumpdir=dump
local_data_opts=     # options passed to local/data.sh
fix_data=true        # run utils/fix_data_dir.sh on each set (drops ids missing from any file)
toolkit=resemblyzer
model=
device=cpu
tag=
extract_opts=        # more options for scripts/extract_spk_embed.sh
projection=tsne      # report projection: tsne or pca

help_message="Usage: $0 --sets \"<set> ...\" [options]
Stages:
  1: local/data.sh \$local_data_opts <datadir>: Kaldi data dirs <datadir>/<set>
  2: utils/fix_data_dir.sh (with --fix_data true), validate_data_dir.sh, utt2dur
  3: speaker embeddings: <dumpdir>/<tag>/<set>/<tag>.scp and spk_<tag>.scp
  4: report: EER, same/different-speaker cosines, projection and heatmap PNG
Options:
  --stage <$stage> --stop_stage <$stop_stage> --nj <$nj> --sets <names> --datadir <$datadir>
  --dumpdir <$dumpdir> --local_data_opts <opts> --fix_data <$fix_data> --toolkit <$toolkit>
  --model <path> --device <$device> --tag <name> --extract_opts <opts> --projection <$projection>"

. ./path.sh
. ./cmd.sh
. utils/parse_options.sh
if [ $# -ne 0 ] || [ -z "$sets" ]; then
    echo "$help_message" >&2
    exit 1
fi
tag=${tag:-$toolkit}

data_stages

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
    for set in $sets; do
        log "stage 3: speaker embeddings of $datadir/$set with $toolkit -> $dumpdir/$tag/$set"
        # shellcheck disable=SC2086
        scripts/extract_spk_embed.sh --config conf/spk_embed.conf --cmd "$extract_cmd" \
            --nj "$nj" --toolkit "$toolkit" --model "$model" --device "$device" --tag "$tag" \
            $extract_opts "$datadir/$set" "$dumpdir/$tag/$set"
    done
fi

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
    for set in $sets; do
        out=$dumpdir/$tag/$set
        log "stage 4: report on $out"
        python3 pyscripts/spk_report.py --projection "$projection" --title "$tag on $set" \
            "$out/$tag.scp" "$out/spk_$tag.scp" "$datadir/$set/utt2spk" "$out/report/$tag"
        log "outputs: $out/$tag.scp (utterances), $out/spk_$tag.scp (speakers)," \
            "$out/report/$tag.png"
    done
fi
log "finished in ${SECONDS} s"
