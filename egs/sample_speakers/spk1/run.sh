#!/usr/bin/env bash
# Speaker embeddings of the sample speakers corpus (real speech shipped in samples/real_speech),
# written where ESPnet's TTS recipes read them: dump/<tag>/<set>/<tag>.scp and spk_<tag>.scp.
set -euo pipefail

log() {
    local fname=${BASH_SOURCE[1]##*/}
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*"
}

stage=1
stop_stage=100
nj=2
toolkit=resemblyzer
model=
device=cpu
tag=
data=data/sample
dumpdir=dump

help_message="Usage: $0 [--stage N] [--stop_stage N] [--nj N] [--toolkit NAME] [--model PATH]
  [--device cpu|cuda] [--tag NAME] [--data DIR] [--dumpdir DIR]
Stages: 1 data preparation, 2 data dir checks, 3 speaker embeddings, 4 report."

. ./path.sh
. ./cmd.sh
. utils/parse_options.sh
if [ $# -ne 0 ]; then
    echo "$help_message" >&2
    exit 1
fi
tag=${tag:-$toolkit}
out=$dumpdir/$tag/$(basename "$data")

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
    log "stage 1: data preparation -> $data"
    local/data.sh "$data"
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
    # text covers only the transcribed utterances: the extraction stage drops and lists the rest.
    log "stage 2: checking $data"
    utils/validate_data_dir.sh --no-feats --no-text "$data"
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
    log "stage 3: speaker embeddings with $toolkit -> $out"
    scripts/extract_spk_embed.sh --config conf/spk_embed.conf --cmd "$extract_cmd" --nj "$nj" \
        --toolkit "$toolkit" --model "$model" --device "$device" --tag "$tag" "$data" "$out"
fi

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
    log "stage 4: report (EER, same/different-speaker cosines, projection, speaker heatmap)"
    python3 pyscripts/spk_report.py --title "$tag on $(basename "$data")" \
        "$out/$tag.scp" "$out/spk_$tag.scp" "$data/utt2spk" "$out/report/$tag"
    log "outputs: $PWD/$out/$tag.scp (utterances), $PWD/$out/spk_$tag.scp (speakers)"
fi
