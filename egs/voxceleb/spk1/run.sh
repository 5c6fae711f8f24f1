#!/usr/bin/env bash
# Speaker verification on VoxCeleb1 with the cleaned VoxCeleb1-O, -E and -H trial lists, as
# WeSpeaker's examples/voxceleb/v2 scores them: set "vox1" (every VoxCeleb1 recording; its
# trial lists in data/vox1/trials/), and with VoxCeleb2 set "vox2_dev" (a few recordings of each
# VoxCeleb2 dev speaker) whose speaker means are the AS-norm cohort (top 300). See README.md.
#   VOXCELEB1=/data/voxceleb1 ./run.sh --nj 8
#   VOXCELEB1=/data/voxceleb1 VOXCELEB2=/data/voxceleb2 ./run.sh --nj 8 --device cuda \
#       --toolkit speechbrain --model /models/spkrec-ecapa-voxceleb
#   VOXCELEB_TRIALS=O ./run.sh ...   (only the lists you have: any of O E H)
# Other options go to spk.sh (./spk.sh --help); later options win, e.g. --score_opts.
#
# --report false (the default) skips spk.sh's stage 4: its report scores every pair of
# utterances of a set in memory (N x N), which the 153,516 recordings of VoxCeleb1 cannot give;
# --report true runs it (small subsets). The trial lists of stage 5 are the evaluation here.
set -euo pipefail

vox1=${VOXCELEB1:-/path/to/voxceleb1}
vox2=${VOXCELEB2:-}
trials=${VOXCELEB_TRIALS:-O E H}  # spaces or commas

# --report is this script's; --stage and --stop_stage are read (the last one given wins, as in
# spk.sh) and passed on; everything else goes to spk.sh as it is.
report=false
stage=1
stop_stage=100
args=()
while [ $# -gt 0 ]; do
    case $1 in
        --report | --stage | --stop_stage | --stop-stage)
            [ $# -ge 2 ] || { echo "$0: $1 needs a value" >&2; exit 1; }
            opt=${1#--}
            printf -v "${opt//-/_}" '%s' "$2"
            [ "$1" = --report ] || args+=("$1" "$2")
            shift 2
            ;;
        --report=* | --stage=* | --stop_stage=* | --stop-stage=*)
            opt=${1%%=*}
            opt=${opt#--}
            printf -v "${opt//-/_}" '%s' "${1#*=}"
            [ "$opt" = report ] || args+=("$1")
            shift
            ;;
        --help | -h)
            report=true  # one call to spk.sh, which prints its usage and exits
            args+=("$1")
            shift
            ;;
        *)
            args+=("$1")
            shift
            ;;
    esac
done
case $report in
    true | false) ;;
    *) echo "$0: --report expects true or false, got '$report'" >&2; exit 1 ;;
esac

trials=${trials//[[:space:]]/,}  # one word: spk.sh splits --local_data_opts on blanks
sets=vox1
local_data_opts="--vox1 $vox1 --trials $trials"
cohort_opts=()
if [ -n "$vox2" ]; then
    sets="vox1 vox2_dev"
    local_data_opts+=" --vox2 $vox2"
    cohort_opts=(--cohort_set vox2_dev)
fi

spk() {
    ./spk.sh --sets "$sets" --fix_data false --local_data_opts "$local_data_opts" \
        --score_set vox1 "${cohort_opts[@]}" --score_opts "--top_n 300" "${args[@]}" "$@"
}

# Without the report: stages up to 3, then from 5 on (spk.sh checks the numbers).
if [ "$report" = true ] || ! [[ $stage =~ ^[0-9]+$ && $stop_stage =~ ^[0-9]+$ ]] ||
        [ "$stop_stage" -lt 4 ] || [ "$stage" -gt 4 ]; then
    spk
    exit 0
fi
if [ "$stage" -eq 4 ] && [ "$stop_stage" -eq 4 ]; then
    echo "$0: stage 4 (the report) runs only with --report true (see the top of $0)" >&2
    exit 1
fi
[ "$stage" -gt 3 ] || spk --stage "$stage" --stop_stage 3
echo "$0: stage 4 (the report) skipped: --report true runs it"
[ "$stop_stage" -lt 5 ] || spk --stage 5 --stop_stage "$stop_stage"
