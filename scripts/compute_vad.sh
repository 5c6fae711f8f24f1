#!/usr/bin/env bash
# Speech regions of every utterance of a Kaldi data dir with Silero VAD (--toolkit silero_vad,
# its model from the silero-vad wheel: nothing is downloaded), in parallel jobs through --cmd
# on the batched engine; then Kaldi segments of the regions, each utterance's share of speech
# and a data dir of the regions. Rerunnable: a job whose inputs and options are unchanged is
# reused, one run with other thresholds is redone.
set -euo pipefail
stage_start=$(date +%s.%N)
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

nj=4                 # number of parallel jobs
cmd=run.pl           # launcher with Kaldi's command line (run.pl, slurm.pl, queue.pl, ...)
threshold=0.5        # speech probability that starts a region (it ends below threshold - 0.15)
min_speech=0.25      # seconds: shorter regions are dropped
min_silence=0.1      # seconds of silence that end a region
pad=0.03             # seconds added to each side of a region
device=cpu           # cpu; cuda: one GPU per job through the launcher's --gpu 1; cuda:N
batch_seconds=60     # upper bound on padded audio seconds in one forward pass
batch_size=64        # upper bound on utterances in one forward pass
num_workers=2        # loader threads per job (decode, resample)
sort_window=128      # utterances sorted by length together; bounds memory and write latency
sort_window_seconds=600  # ... and at most this much audio: bounds memory for long utterances
num_threads=auto     # CPU cores per job; auto: with run.pl this machine's cores divided among
                     # the jobs that run at once, else the CPUs each job is given
skip_bad=false       # true: list bad utterances in <out_dir>/bad_utts and keep going
force=false          # true: run every job again, even those whose outputs are up to date
tag=vad              # stem of the regions' scp: <out_dir>/<tag>.scp
python=python3

help_message="Usage: $0 [options] <data_dir> <out_dir>
Writes <out_dir>/segments (the speech regions, named <utt>-<start ms>-<end ms>),
<out_dir>/utt2speech_ratio (speech seconds / duration of each utterance of <data_dir>/text, or
wav.scp), <out_dir>/data (wav.scp, segments, utt2spk, spk2utt, utt2dur of the regions; no
text: a region's words are not known)
and <out_dir>/<tag>.scp (int32 [regions, 2]: start and end samples at 16 kHz per utterance).
Utterances without speech get ratio 0 and no region, and are listed.
Options:
  --nj <$nj> --cmd <$cmd> --threshold <$threshold> --min_speech <$min_speech>
  --min_silence <$min_silence> --pad <$pad> --device <$device>
  --batch_seconds <$batch_seconds> --batch_size <$batch_size> --num_workers <$num_workers>
  --sort_window <$sort_window> --sort_window_seconds <$sort_window_seconds>
  --num_threads <$num_threads|N> --skip_bad <$skip_bad> --force <$force>
  --tag <$tag> --python <$python>"

# What the shared extraction steps read (scripts/lib/extract_stage.sh).
toolkit=silero_vad
model=
dtype=float32
precision=fp32
compress=false
cpu_layout=auto

. "$root/scripts/lib/extract_stage.sh"
for arg in "$@"; do
    if [ "$arg" = --help ] || [ "$arg" = -h ]; then
        echo "$help_message" >&2
        exit 0
    fi
done
. "$root/utils/parse_options.sh"
if [ $# -ne 2 ]; then
    echo "$help_message" >&2
    exit 1
fi
data=$1
out=$2
# <out_dir> gets segments, utt2dur, ... and <out_dir>/data a data dir: neither may be <data_dir>.
for dir in "$out" "$out/data"; do
    if [ "$(realpath -m "$dir")" = "$(realpath -m "$data")" ]; then
        echo "$0: ERROR: $dir is the input data dir $data, which the outputs would overwrite;" \
            "give another out dir" >&2
        exit 1
    fi
done
stage_kind=features
# The thresholds are the toolkit's options: they are in every job's record, so a run with
# others redoes the jobs.
extractor_opts="--threshold $threshold --min_speech $min_speech --min_silence $min_silence"
extractor_opts+=" --pad $pad"

extract_stage_prepare
extract_stage_run --batch_seconds "$batch_seconds" --batch_size "$batch_size" \
    --num_workers "$num_workers" --sort_window "$sort_window" \
    --sort_window_seconds "$sort_window_seconds" --num_threads "$num_threads" \
    --skip_bad "$skip_bad"
# shellcheck disable=SC2119  # this stage has no merge options ("$@" here is data and out dirs)
extract_stage_merge
log "segments and data dir of the speech regions"
"$python" "$root/pyscripts/compute_vad.py" --tag "$tag" "$data" "$out"
log "done: $out/segments $out/utt2speech_ratio $out/data"
