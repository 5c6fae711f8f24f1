#!/usr/bin/env bash
# Speaker embeddings of VCTK (0.92 or 0.80 layout, see local/data.sh): one set, "all".
# Set VCTK (or edit the default) to the corpus; other options go to spk.sh, e.g.
#   VCTK=/data/VCTK-Corpus-0.92 ./run.sh --nj 8 --device cuda
#   ./run.sh --local_data_opts "--corpus /data/VCTK-Corpus-0.92 --mic mic2"
# --fix_data false: recordings without a transcript (all of p315, a few others) stay in the data
# dir for stage 3 to skip and list in <dumpdir>/<tag>/all/dropped_utts.
set -euo pipefail

corpus=${VCTK:-/path/to/VCTK-Corpus-0.92}

./spk.sh --sets all --fix_data false --local_data_opts "--corpus $corpus" "$@"
