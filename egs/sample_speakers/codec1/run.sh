#!/usr/bin/env bash
# Neural codec tokens of the sample speakers corpus: an EnCodec (24 kHz), DAC or Mimi codec's
# integer codes, one [frames, codebooks] int32 matrix per utterance in
# dump/codec/sample/codec.scp and its Kaldi text form dump/codec/sample/codec (frame-major:
# t0c0 t0c1 ... t1c0 ...), aligned with the data dir's text, in --nj jobs. No codec ships
# offline: give a local directory saved with save_pretrained,
#   ./run.sh --model /models/encodec_24khz --extractor_opts "--bandwidth 6.0"
#   ./run.sh --model /models/mimi --extractor_opts "--codebooks 8 --dedup true"
# (--dedup true adds dump/codec/sample/codec_durations: frames per deduplicated unit).
set -euo pipefail

# --last_stage 3: this recipe's stages are tok.sh's first three (its --help lists them).
./tok.sh --sets sample --nj 2 --fix_data false --toolkit codec --last_stage 3 "$@"
