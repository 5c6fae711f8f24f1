#!/usr/bin/env bash
# Speaker embeddings of the sample speakers corpus (real speech shipped in samples/real_speech).
# Its text covers 15 of the 26 utterances on purpose: the extraction stage drops and lists the
# others, so the data dir is not "fixed" first. Stage 5 scores trials of 1 s pieces of the
# speakers with two utterances or more in text, AS-norm against the others (local/data.sh).
set -euo pipefail

./spk.sh --sets "sample sample_pieces sample_cohort" --nj 2 --fix_data false \
    --score_set sample_pieces --cohort_set sample_cohort --score_opts "--top_n 5" "$@"
