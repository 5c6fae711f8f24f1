#!/usr/bin/env bash
# Frame-level (or pooled) features of a Kaldi data dir with any feature toolkit: SSL layers
# (HuBERT, wav2vec 2.0, WavLM, data2vec via transformers), Kaldi fbank or MFCC, ... Splits into
# jobs, extracts in parallel through --cmd, merges, aligns with text and checks (frame counts
# against utt2num_frames). Rerunnable.
set -euo pipefail
stage_start=$(date +%s.%N)
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

nj=4                 # number of parallel jobs
cmd=run.pl           # launcher with Kaldi's command line (run.pl, slurm.pl, queue.pl, ...)
toolkit=ssl          # the extractor: pyscripts/extract.py --help lists them
model=               # ssl: a local directory saved with save_pretrained (or a hub name you give)
extractor_opts=      # the toolkit's own options, e.g. "--layers 6 --pool mean" (ssl) or
                     # "--num_mel_bins 40 --sample_rate 8000" (fbank); --help lists them
device=cpu           # cpu; cuda: one GPU per job through the launcher's --gpu 1; cuda:N
precision=fp32       # forward passes in fp32 (exact), tf32 (GPU), bf16, fp16 (GPU): README.md
dtype=float32        # storage of float streams: float32 or float16
compress=false       # true: Kaldi-compress the matrices (lossy, as copy-feats --compress)
batch_seconds=60     # upper bound on padded audio seconds in one forward pass
batch_size=64        # upper bound on utterances in one forward pass
num_workers=2        # loader threads per job (decode, resample, features)
sort_window=128      # utterances sorted by length together; bounds memory and write latency
sort_window_seconds=600  # ... and at most this much audio: bounds memory for long utterances
num_threads=auto     # CPU cores per job; auto: with run.pl this machine's cores divided among
                     # the jobs that run at once, else the CPUs each job is given
cpu_layout=auto      # how a CPU job spends them: intra_op (one forward pass on all), passes (one
                     # single-threaded pass per core at once), auto (the toolkit's faster one)
skip_bad=false       # true: list bad utterances in <out_dir>/bad_utts and keep going
force=false          # true: run every job again, even those whose outputs are up to date
tag=feats            # output stem: <tag>_<stream>.scp per named stream (ssl: layer<N>), else <tag>.scp
python=python3

help_message="Usage: $0 [options] <data_dir> <out_dir>
Writes <out_dir>/<tag>_<stream>.scp per stream (ssl: <tag>_layer<N>.scp) or <tag>.scp for a
single stream (fbank, mfcc), with utt2num_frames for frame-level streams, one entry per
utterance of <data_dir>/text (or wav.scp), in that order.
Options:
  --nj <$nj> --cmd <$cmd> --toolkit <$toolkit> --model <dir> --device <$device>
  --precision <$precision: fp32|tf32|bf16|fp16; tf32 and fp16 need --device cuda>
  --extractor_opts <\"--name value ...\": the toolkit's own options>
  --dtype <$dtype> --compress <$compress>
  --batch_seconds <$batch_seconds> --batch_size <$batch_size> --num_workers <$num_workers>
  --sort_window <$sort_window> --sort_window_seconds <$sort_window_seconds>
  --num_threads <$num_threads|N> --cpu_layout <$cpu_layout|intra_op|passes>
  --skip_bad <$skip_bad> --force <$force>
  --tag <$tag> --python <$python>"

. "$root/scripts/lib/extract_stage.sh"
stage_help "$@"
. "$root/utils/parse_options.sh"
if [ $# -ne 2 ]; then
    echo "$help_message" >&2
    exit 1
fi
data=$1
out=$2
stage_kind=features

extract_stage_prepare
extract_stage_run --batch_seconds "$batch_seconds" --batch_size "$batch_size" \
    --num_workers "$num_workers" --sort_window "$sort_window" \
    --sort_window_seconds "$sort_window_seconds" --num_threads "$num_threads" \
    --skip_bad "$skip_bad"
# shellcheck disable=SC2119  # this stage has no merge options ("$@" here is data and out dirs)
extract_stage_merge
scps=("$out"/"$tag"*.scp)
log "done: ${scps[*]}"
