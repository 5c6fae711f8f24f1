#!/usr/bin/env bash
# Quality tables of every utterance of a Kaldi data dir (--toolkit quality: Silero VAD regions,
# its model from the silero-vad wheel, then level, clipping and SNR in numpy), in parallel jobs
# through --cmd on the batched engine; then one Kaldi table per measure. Rerunnable: a job
# whose inputs and options are unchanged is reused, one run with other VAD options is redone.
set -euo pipefail
stage_start=$(date +%s.%N)
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

nj=4                 # number of parallel jobs
cmd=run.pl           # launcher with Kaldi's command line (run.pl, slurm.pl, queue.pl, ...)
threshold=0.5        # VAD: speech probability that starts a region (ends below threshold - 0.15)
min_speech=0.25      # VAD: seconds: shorter regions are dropped
min_silence=0.1      # VAD: seconds of silence that end a region
pad=0.03             # VAD: seconds added to each side of a region
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
tag=measures         # stem of the measures' scp: <out_dir>/<tag>.scp
python=python3

help_message="Usage: $0 [options] <data_dir> <out_dir>
Writes, for every utterance of <data_dir>/text (or wav.scp), the Kaldi tables
<out_dir>/utt2dur (seconds), utt2speech_ratio (Silero VAD speech seconds / duration),
utt2level_dbfs (RMS over the utterance, dB re full scale 1.0), utt2clip_ratio (share of samples
with |x| >= 0.999) and utt2snr_db (VAD-based energy estimate; WADA-SNR where under 0.13 s of
non-speech: speechdump/quality.py), and <out_dir>/<tag>.scp (float32 [5] per utterance in
that order). Filter a data dir with them: utils/filter_data_dir.sh --quality_dir <out_dir>.
Options:
  --nj <$nj> --cmd <$cmd> --threshold <$threshold> --min_speech <$min_speech>
  --min_silence <$min_silence> --pad <$pad> --device <$device>
  --batch_seconds <$batch_seconds> --batch_size <$batch_size> --num_workers <$num_workers>
  --sort_window <$sort_window> --sort_window_seconds <$sort_window_seconds>
  --num_threads <$num_threads|N> --skip_bad <$skip_bad> --force <$force>
  --tag <$tag> --python <$python>"

# What the shared extraction steps read (scripts/lib/extract_stage.sh).
toolkit=quality
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
if [ "$(realpath -m "$out")" = "$(realpath -m "$data")" ]; then
    echo "$0: ERROR: $out is the input data dir $data, whose utt2dur the outputs would" \
        "overwrite; give another out dir" >&2
    exit 1
fi
stage_kind=features
# The VAD options are the toolkit's: they are in every job's record, so a run with others
# redoes the jobs.
extractor_opts="--threshold $threshold --min_speech $min_speech --min_silence $min_silence"
extractor_opts+=" --pad $pad"

extract_stage_prepare
extract_stage_run --batch_seconds "$batch_seconds" --batch_size "$batch_size" \
    --num_workers "$num_workers" --sort_window "$sort_window" \
    --sort_window_seconds "$sort_window_seconds" --num_threads "$num_threads" \
    --skip_bad "$skip_bad"
# shellcheck disable=SC2119  # this stage has no merge options ("$@" here is data and out dirs)
extract_stage_merge
log "quality tables"
"$python" "$root/pyscripts/compute_quality.py" --tag "$tag" "$out"
log "done: $out/utt2{dur,speech_ratio,level_dbfs,clip_ratio,snr_db}"
