#!/usr/bin/env bash
# SSL representations of the sample speakers corpus: every layer of a transformers audio encoder
# (HuBERT, wav2vec 2.0, WavLM, data2vec), frame level, one ark/scp per layer. No SSL model ships
# offline: give a local directory saved with save_pretrained,
#   ./run.sh --model /models/hubert-base-ls960
# then learn tokens on one of its layers with
#   ../tok1/run.sh --toolkit ssl --model ... --extractor_opts "--layers 6"
set -euo pipefail

# --last_stage 3: this recipe's stages are tok.sh's first three (its --help lists them).
./tok.sh --sets sample --nj 2 --fix_data false --toolkit ssl --last_stage 3 \
    --extractor_opts "--layers all" "$@"
