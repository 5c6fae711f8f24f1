#!/usr/bin/env bash
# Speaker embeddings of a Kaldi data dir: split into jobs, extract in parallel through --cmd,
# merge, average per speaker, align with text and check. Rerunnable: finished jobs are skipped.
set -euo pipefail
stage_start=$(date +%s.%N)
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

nj=4                 # number of parallel jobs
cmd=run.pl           # launcher with Kaldi's command line (run.pl, slurm.pl, queue.pl, ...)
toolkit=resemblyzer  # a speaker toolkit: pyscripts/extract.py --help lists them
model=               # local model path in the toolkit's layout; empty: the toolkit's default
extractor_opts=      # the toolkit's own options, e.g. "--num_crops 5" (rawnet)
device=cpu           # cpu; cuda: each job gets its own GPU through the launcher's --gpu 1;
                     # cuda:N: every job uses GPU N as the machine numbers it (no --gpu)
precision=fp32       # forward passes in fp32 (exact), tf32 (GPU), bf16, fp16 (GPU): README.md
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
vad=false            # true: keep only each utterance's speech (Silero VAD), concatenated, as
                     # WeSpeaker's CLI does; an utterance without speech is a bad utterance
vad_threshold=0.5    # speech probability that starts a region (it ends below threshold - 0.15)
vad_min_speech=0.25  # seconds: shorter speech regions are dropped
vad_min_silence=0.1  # seconds of silence that end a region
vad_pad=0.03         # seconds kept on each side of a region
utt_norm=false       # L2-normalise utterance vectors before averaging them per speaker
spk_norm=true        # L2-normalise speaker means
tag=                 # output name; default: the toolkit name
python=python3

help_message="Usage: $0 [options] <data_dir> <out_dir>
Writes <out_dir>/<tag>.scp (one vector per utterance of <data_dir>/text, or of wav.scp when
there is no text, in that order) and <out_dir>/spk_<tag>.scp (one mean vector per speaker).
Options:
  --nj <$nj> --cmd <$cmd> --toolkit <$toolkit> --model <path> --device <$device>
  --precision <$precision: fp32|tf32|bf16|fp16; tf32 and fp16 need --device cuda>
  --extractor_opts <\"--name value ...\": the toolkit's own options>
  --batch_seconds <$batch_seconds> --batch_size <$batch_size> --num_workers <$num_workers>
  --sort_window <$sort_window> --sort_window_seconds <$sort_window_seconds>
  --num_threads <$num_threads|N> --cpu_layout <$cpu_layout|intra_op|passes>
  --skip_bad <$skip_bad> --force <$force>
  --vad <$vad: true keeps only the speech of each utterance (Silero VAD), concatenated>
  --vad_threshold <$vad_threshold> --vad_min_speech <$vad_min_speech>
  --vad_min_silence <$vad_min_silence> --vad_pad <$vad_pad> (silero_vad's defaults)
  --utt_norm <$utt_norm> --spk_norm <$spk_norm> --tag <name> --python <$python>"

. "$root/scripts/lib/extract_stage.sh"
stage_help "$@"
. "$root/utils/parse_options.sh"
if [ $# -ne 2 ]; then
    echo "$help_message" >&2
    exit 1
fi
data=$1
out=$2
tag=${tag:-$toolkit}
stage_kind=speaker
dtype=float32
compress=false
# Trimming to speech is a general option of the jobs (pyscripts/extract.py), not the toolkit's:
# it travels with the toolkit's options so that the pre-flight checks it with them, and a bad
# value is refused before any job.
extractor_opts+=" --vad $vad --vad_threshold $vad_threshold --vad_min_speech $vad_min_speech"
extractor_opts+=" --vad_min_silence $vad_min_silence --vad_pad $vad_pad"

extract_stage_prepare
extract_stage_run --batch_seconds "$batch_seconds" --batch_size "$batch_size" \
    --num_workers "$num_workers" --sort_window "$sort_window" \
    --sort_window_seconds "$sort_window_seconds" --num_threads "$num_threads" \
    --skip_bad "$skip_bad"
extract_stage_merge --spk_means true --utt_norm "$utt_norm" --spk_norm "$spk_norm"
log "done: $out/$tag.scp $out/spk_$tag.scp"
