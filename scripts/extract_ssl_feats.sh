#!/usr/bin/env bash
# SSL representations (HuBERT, wav2vec 2.0, WavLM, data2vec via transformers) or Kaldi features
# (fbank, MFCC) of a Kaldi data dir: split into jobs, extract in parallel through --cmd, merge,
# align with text and check (frame counts against utt2num_frames). Rerunnable.
set -euo pipefail
stage_start=$(date +%s.%N)
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

nj=4                 # number of parallel jobs
cmd=run.pl           # launcher with Kaldi's command line (run.pl, slurm.pl, queue.pl, ...)
toolkit=ssl          # ssl (a transformers audio encoder), fbank or mfcc
model=               # ssl: a local directory saved with save_pretrained (or a hub name you give)
layers=all           # ssl: "6", "3,6,9" or "all" (0 = input of the first transformer layer)
pool=none            # ssl: none (frame level), mean or last (one vector per utterance)
window_seconds=      # ssl: sliding windows of this many seconds, each pooled to one vector
hop_seconds=         # ssl: ... every this many seconds
num_mel_bins=        # fbank/mfcc: mel bins (default 80 for fbank, 23 for mfcc)
num_ceps=            # mfcc: cepstra (default 13)
frame_length=        # fbank/mfcc: ms (default 25)
frame_shift=         # fbank/mfcc: ms (default 10)
dither=              # fbank/mfcc: default 0 (Kaldi: 1.0; seeded per utterance)
device=cpu           # cpu; cuda: one GPU per job through the launcher's --gpu 1; cuda:N
dtype=float32        # storage: float32 or float16
compress=false       # true: Kaldi-compress the matrices (lossy, as copy-feats --compress)
batch_seconds=60     # upper bound on padded audio seconds in one forward pass
batch_size=64        # upper bound on utterances in one forward pass
num_workers=2        # loader threads per job (decode, resample, features)
sort_window=128      # utterances sorted by length together; bounds memory and write latency
sort_window_seconds=600  # ... and at most this much audio: bounds memory for long utterances
num_threads=1        # compute threads per job (torch, BLAS): keep nj x num_threads <= cores
skip_bad=false       # true: list bad utterances in <out_dir>/bad_utts and keep going
tag=feats            # output stem: <tag>_layer<N>.scp for ssl layers, <tag>.scp otherwise
python=python3

help_message="Usage: $0 [options] <data_dir> <out_dir>
Writes <out_dir>/<tag>_layer<N>.scp per SSL layer (or <tag>.scp for fbank/mfcc) with
utt2num_frames, one entry per utterance of <data_dir>/text (or wav.scp), in that order.
Options:
  --nj <$nj> --cmd <$cmd> --toolkit <$toolkit> --model <dir> --layers <$layers> --pool <$pool>
  --window_seconds <s> --hop_seconds <s> --num_mel_bins <n> --num_ceps <n> --frame_length <ms>
  --frame_shift <ms> --dither <d> --device <$device> --dtype <$dtype> --compress <$compress>
  --batch_seconds <$batch_seconds> --batch_size <$batch_size> --num_workers <$num_workers>
  --sort_window <$sort_window> --sort_window_seconds <$sort_window_seconds>
  --num_threads <$num_threads> --skip_bad <$skip_bad>
  --tag <$tag> --python <$python>"

. "$root/utils/parse_options.sh"
if [ $# -ne 2 ]; then
    echo "$help_message" >&2
    exit 1
fi
data=$1
out=$2
. "$root/scripts/lib/extract_stage.sh"

# Only the options that apply to the chosen toolkit, and only those given.
extractor_opts=()
if [ "$toolkit" = ssl ]; then
    extractor_opts+=(--layers "$layers" --pool "$pool")
    [ -n "$window_seconds" ] && extractor_opts+=(--window_seconds "$window_seconds")
    [ -n "$hop_seconds" ] && extractor_opts+=(--hop_seconds "$hop_seconds")
else
    for opt in num_mel_bins num_ceps frame_length frame_shift dither; do
        [ -n "${!opt}" ] && extractor_opts+=(--"$opt" "${!opt}")
    done
fi

extract_stage_prepare
extract_stage_run --toolkit "$toolkit" ${model:+--model "$model"} "${extractor_opts[@]}" \
    --dtype "$dtype" --compress "$compress" --batch_seconds "$batch_seconds" --batch_size "$batch_size" \
    --num_workers "$num_workers" --sort_window "$sort_window" \
    --sort_window_seconds "$sort_window_seconds" --num_threads "$num_threads" \
    --skip_bad "$skip_bad"
extract_stage_merge
log "done: $(ls "$out"/"$tag"*.scp | tr '\n' ' ')"
