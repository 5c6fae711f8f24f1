#!/usr/bin/env bash
# Speaker embeddings of a Kaldi data dir: split into jobs, extract in parallel through --cmd,
# merge, average per speaker, align with text and check. Rerunnable: finished jobs are skipped.
set -euo pipefail

log() {
    local fname=${BASH_SOURCE[1]##*/}
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*" >&2
}
stage_start=$(date +%s.%N)
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

nj=4                 # number of parallel jobs
cmd=run.pl           # launcher with Kaldi's command line (run.pl, slurm.pl, queue.pl, ...)
toolkit=resemblyzer  # resemblyzer
model=               # local model path in the toolkit's layout; empty: the toolkit's default
device=cpu           # cpu; cuda: each job gets its own GPU through the launcher's --gpu 1;
                     # cuda:N: every job uses GPU N as the machine numbers it (no --gpu)
batch_seconds=60     # upper bound on audio seconds in one forward pass
batch_size=64        # upper bound on utterances in one forward pass
num_workers=2        # loader threads per job (decode, resample, features)
sort_window=128      # utterances sorted by length together; bounds memory and write latency
num_threads=1        # torch threads per job: nj x num_threads should not exceed the cores
skip_bad=false       # true: list bad utterances in <out_dir>/bad_utts and keep going
utt_norm=false       # L2-normalise utterance vectors before averaging them per speaker
spk_norm=true        # L2-normalise speaker means
tag=                 # output name; default: the toolkit name
python=python3

help_message="Usage: $0 [options] <data_dir> <out_dir>
Writes <out_dir>/<tag>.scp (one vector per utterance of <data_dir>/text, or of wav.scp when
there is no text, in that order) and <out_dir>/spk_<tag>.scp (one mean vector per speaker).
Options:
  --nj <$nj> --cmd <$cmd> --toolkit <$toolkit> --model <path> --device <$device>
  --batch_seconds <$batch_seconds> --batch_size <$batch_size> --num_workers <$num_workers>
  --sort_window <$sort_window> --num_threads <$num_threads> --skip_bad <$skip_bad>
  --utt_norm <$utt_norm> --spk_norm <$spk_norm> --tag <name>
  --python <$python>"

. "$root/utils/parse_options.sh"
if [ $# -ne 2 ]; then
    echo "$help_message" >&2
    exit 1
fi
data=$1
out=$2
tag=${tag:-$toolkit}
export PATH="$root/utils:$PATH"

if ! "$python" -c "import speechdump" 2>/dev/null; then
    log "ERROR: '$python' cannot import speechdump: source the recipe's path.sh (or make setup)"
    exit 1
fi
for f in wav.scp utt2spk; do
    [ -f "$data/$f" ] || { log "ERROR: $data/$f is missing"; exit 1; }
done
validate_data_dir.sh --no-text --no-feats "$data" >/dev/null

# The utterance list is segments' when there is one; only ids of text are extracted.
if [ -f "$data/segments" ]; then source_list=$data/segments; else source_list=$data/wav.scp; fi
text_opt=()
mkdir -p "$out/log"
rm -f "$out/$tag.scp" "$out/spk_$tag.scp"  # stale until this run has merged again
todo=$out/todo.list
if [ -f "$data/text" ]; then
    text_opt=(--text "$data/text")
    filter_scp.pl "$data/text" "$source_list" > "$todo"
else
    cp "$source_list" "$todo"
fi
num_utts=$(wc -l < "$todo")
if [ "$num_utts" -eq 0 ]; then
    log "ERROR: no utterance of $source_list is in $data/text"
    exit 1
fi
if [ "$nj" -gt "$num_utts" ]; then
    log "only $num_utts utterances: using $num_utts jobs instead of $nj"
    nj=$num_utts
fi

split=$out/split$nj
mkdir -p "$split"
dur_opt=()
[ -f "$data/utt2dur" ] && dur_opt=(--utt2dur "$data/utt2dur")
parts=()
for n in $(seq "$nj"); do parts+=("$split/input.$n"); done
split_scp.pl "${dur_opt[@]}" "$todo" "${parts[@]}"
if [ -f "$data/segments" ]; then
    job_input=(--segments "$split/input.JOB" "$data/wav.scp")
else
    job_input=("$split/input.JOB")
fi

gpu_opt=()
[ "$device" = cuda ] && gpu_opt=(--gpu 1)
log "extracting $num_utts utterances with $toolkit in $nj jobs (logs: $out/log/extract.*.log)"
# $cmd is word-split on purpose: it may carry launcher options ("slurm.pl --mem 8G").
if ! $cmd "${gpu_opt[@]}" JOB=1:"$nj" "$out/log/extract.JOB.log" \
        "$python" "$root/pyscripts/extract_spk_embed.py" \
        --toolkit "$toolkit" ${model:+--model "$model"} --device "$device" \
        --batch_seconds "$batch_seconds" --batch_size "$batch_size" \
        --num_workers "$num_workers" --sort_window "$sort_window" \
        --num_threads "$num_threads" --skip_bad "$skip_bad" \
        "${job_input[@]}" "$split/$tag.JOB"; then
    log "ERROR: extraction failed; the errors in the job logs:"
    grep -h "^ERROR" "$out"/log/extract.*.log | head -n 20 >&2 || true
    exit 1
fi

log "merging $nj jobs, averaging speakers, aligning with ${text_opt[1]:-$source_list}"
"$python" "$root/pyscripts/merge_spk_embed.py" --tag "$tag" --nj "$nj" \
    --source_ids "$source_list" "${text_opt[@]}" --utt2spk "$data/utt2spk" \
    --utt_norm "$utt_norm" --spk_norm "$spk_norm" --start_time "$stage_start" "$split" "$out"
log "done: $out/$tag.scp $out/spk_$tag.scp"
