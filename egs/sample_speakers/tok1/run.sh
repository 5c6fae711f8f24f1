#!/usr/bin/env bash
# Discrete tokens of the sample speakers corpus: features (fbank by default; an SSL layer with
# --toolkit ssl --model DIR --extractor_opts "--layers N") -> k-means -> token sequences, each
# stage in --nj jobs.
set -euo pipefail

./tok.sh --sets sample --nj 2 --fix_data false --n_clusters 32 "$@"
