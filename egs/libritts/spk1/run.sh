#!/usr/bin/env bash
# Speaker embeddings of LibriTTS or LibriTTS-R subsets (see local/data.sh): one set per subset,
# dev-clean -> dev_clean. Set LIBRITTS (or edit the default) to LibriTTS/, LibriTTS_R/ or the
# directory holding it; other options go to spk.sh, e.g.
#   LIBRITTS=/data/LibriTTS_R ./run.sh --nj 8
#   ./run.sh --sets dev_clean --local_data_opts "--corpus /data/LibriTTS --subsets dev-clean --text_kind original"
# --fix_data false: a recording without its text file stays in the data dir for stage 3 to skip
# and list in <dumpdir>/<tag>/<set>/dropped_utts.
set -euo pipefail

corpus=${LIBRITTS:-/path/to/LibriTTS}

./spk.sh --sets "dev_clean test_clean" --fix_data false \
    --local_data_opts "--corpus $corpus --subsets dev-clean,test-clean" "$@"
