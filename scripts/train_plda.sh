#!/usr/bin/env bash
# Trains the two-covariance PLDA back end of scripts/score_trials.sh --backend plda on
# speaker-labelled embeddings (a training set's <tag>.scp and its utt2spk): LDA, centring and
# length normalisation, then EM. Runs here, not through --cmd: minutes at most for a VoxCeleb2
# size set.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

lda_dim=200      # LDA dimension (capped by the embedding dimension and the speakers - 1)
iterations=10    # EM iterations
python=python3

help_message="Usage: $0 [options] <embed_scp> <utt2spk> <plda_dir>
Writes <plda_dir>/plda.npz (for score_trials.sh --plda).
Options:
  --lda_dim <$lda_dim> --iterations <$iterations> --python <$python>"

. "$root/scripts/lib/common.sh"

. "$root/utils/parse_options.sh"
if [ $# -ne 3 ]; then
    echo "$help_message" >&2
    exit 1
fi
embed_scp=$1
utt2spk=$2
plda_dir=$3

for f in "$embed_scp" "$utt2spk"; do
    [ -s "$f" ] || { log "ERROR: $f is missing or empty"; exit 1; }
done
require_speechdump "$python"
mkdir -p "$plda_dir"
log "training PLDA on $embed_scp -> $plda_dir/plda.npz"
"$python" "$root/pyscripts/train_plda.py" --lda_dim "$lda_dim" --iterations "$iterations" \
    "$embed_scp" "$utt2spk" "$plda_dir/plda.npz"
