#!/usr/bin/env bash
# Speaker verification on VoxCeleb1 with the cleaned VoxCeleb1-O, -E and -H trial lists, as
# WeSpeaker's examples/voxceleb/v2 scores them: set "vox1" (every VoxCeleb1 recording; its
# trial lists in data/vox1/trials/), and with VoxCeleb2 set "vox2_dev" (a few recordings of each
# VoxCeleb2 dev speaker) whose speaker means are the AS-norm cohort (top 300). See README.md.
#   VOXCELEB1=/data/voxceleb1 ./run.sh --nj 8
#   VOXCELEB1=/data/voxceleb1 VOXCELEB2=/data/voxceleb2 ./run.sh --nj 8 --device cuda \
#       --toolkit speechbrain --model /models/spkrec-ecapa-voxceleb
#   VOXCELEB_TRIALS=O ./run.sh ...   (only the lists you have: any of O E H)
# Other options go to spk.sh (./spk.sh --help); later options win, e.g. --score_opts. Stage 4's
# report covers a fixed sample of 3000 utterances of a set this large; stage 5 evaluates.
set -euo pipefail

vox1=${VOXCELEB1:-/path/to/voxceleb1}
vox2=${VOXCELEB2:-}
trials=${VOXCELEB_TRIALS:-O E H}  # spaces or commas

trials=${trials//[[:space:]]/,}  # one word: spk.sh splits --local_data_opts on blanks
sets=vox1
local_data_opts="--vox1 $vox1 --trials $trials"
cohort_opts=()
if [ -n "$vox2" ]; then
    sets="vox1 vox2_dev"
    local_data_opts+=" --vox2 $vox2"
    cohort_opts=(--cohort_set vox2_dev)
fi

./spk.sh --sets "$sets" --fix_data false --local_data_opts "$local_data_opts" \
    --score_set vox1 "${cohort_opts[@]}" --score_opts "--top_n 300" "$@"
