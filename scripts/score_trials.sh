#!/usr/bin/env bash
# Speaker verification on extracted embeddings: scores a trial list (cosine or PLDA), normalises
# the scores against a cohort (S-norm, AS-norm) and reports EER and minDCF with a DET plot, as
# WeSpeaker's and ESPnet's spk1 recipes do after extraction. Seconds of work: it runs here, not
# through --cmd.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

backend=cosine    # cosine or plda
plda=             # PLDA model (scripts/train_plda.sh: <dir>/plda.npz), with --backend plda
norm=none         # none, snorm or asnorm (against --cohort)
cohort=           # scp of cohort embeddings, e.g. spk_<tag>.scp of a training set
top_n=300         # cohort scores kept per embedding by asnorm
mean_scp=         # cosine: subtract the mean of these embeddings first (a training set's)
p_target="0.01 0.05"  # priors of the minDCF figures (WeSpeaker's and ESPnet's)
c_miss=1
c_fa=1
enroll_by=utt     # utt: enrollment ids are utterances; spk: speakers of --data_dir's utt2spk
data_dir=         # data dir of the embeddings: maps VoxCeleb trial paths, groups --enroll_by spk
title=            # title of the DET plot
python=python3

help_message="Usage: $0 [options] <trials> <enroll_scp> <test_scp> <out_dir>
Writes <out_dir>/scores (<enroll> <test> <score> [target|nontarget], in trial order) and, when
the trials are labelled, <out_dir>/results (EER <percent>, minDCF(...) <value>) and
<out_dir>/det.png. Trials: '<enroll> <test> target|nontarget' (Kaldi), '1|0 <path> <path>'
(VoxCeleb; paths mapped through --data_dir's wav.scp), or '<enroll> <test>' (no labels).
Options:
  --backend <$backend> --plda <model> --norm <$norm> --cohort <scp> --top_n <$top_n>
  --mean_scp <scp> --p_target <\"$p_target\"> --c_miss <$c_miss> --c_fa <$c_fa>
  --enroll_by <$enroll_by> --data_dir <dir> --title <text> --python <$python>"

. "$root/scripts/lib/common.sh"

. "$root/utils/parse_options.sh"
if [ $# -ne 4 ]; then
    echo "$help_message" >&2
    exit 1
fi
trials=$1
enroll_scp=$2
test_scp=$3
out_dir=$4

if ! [[ $top_n =~ ^[0-9]+$ ]]; then
    log "ERROR: --top_n must be a positive integer, got '$top_n'"
    exit 1
fi
for f in "$trials" "$enroll_scp" "$test_scp" ${cohort:+"$cohort"} ${mean_scp:+"$mean_scp"} \
        ${plda:+"$plda"}; do
    [ -s "$f" ] || { log "ERROR: $f is missing or empty"; exit 1; }
done
require_speechdump "$python"
log "scoring $trials ($backend, norm $norm) -> $out_dir"
"$python" "$root/pyscripts/score_trials.py" --backend "$backend" ${plda:+--plda "$plda"} \
    --norm "$norm" ${cohort:+--cohort "$cohort"} --top_n "$top_n" \
    ${mean_scp:+--mean_scp "$mean_scp"} --p_target "$p_target" --c_miss "$c_miss" \
    --c_fa "$c_fa" --enroll_by "$enroll_by" ${data_dir:+--data_dir "$data_dir"} \
    ${title:+--title "$title"} "$trials" "$enroll_scp" "$test_scp" "$out_dir"
