#!/usr/bin/env bash
# Speaker embeddings of LibriSpeech subsets (see local/data.sh): one set per subset,
# dev-clean -> dev_clean. Set LIBRISPEECH (or edit the default) to the corpus; other options go
# to spk.sh, e.g.
#   LIBRISPEECH=/data/LibriSpeech ./run.sh --nj 8
#   ./run.sh --sets train_clean_100 --local_data_opts "--corpus /data --subsets train-clean-100"
set -euo pipefail

corpus=${LIBRISPEECH:-/path/to/LibriSpeech}

./spk.sh --sets "dev_clean test_clean" --fix_data false \
    --local_data_opts "--corpus $corpus --subsets dev-clean,test-clean" "$@"
