#!/usr/bin/env bash
# Discrete speech tokens: the nearest k-means center (scripts/learn_kmeans.sh) of every frame of a
# feats.scp. Splits the scp into jobs run through --cmd, merges them in the order of the scp and
# checks the result, on the extraction stages' machinery: one stage per out dir at a time (a
# lock), SIGTERM/SIGINT stop the jobs, a failed job's reason on the console, job records
# (split<N>/done.<n>) that a rerun reuses: finished jobs are skipped.
set -euo pipefail
stage_start=$(date +%s.%N)
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

nj=4                 # number of parallel jobs
cmd=run.pl           # launcher with Kaldi's command line (run.pl, slurm.pl, queue.pl, ...)
device=cpu           # cpu; cuda: each job gets its own GPU through the launcher's --gpu 1;
                     # cuda:N: every job uses GPU N as the machine numbers it (no --gpu)
batch_frames=65536   # frames (of many utterances) per distance matmul
num_threads=1        # torch threads per job: nj x num_threads should not exceed the cores
dedup=false          # true: runs of a repeated token become one unit; <out_dir>/tokens_durations
shards=false         # true: also write <out_dir>/shards/tokens.{json,*.bin,*.idx} (speech-LM)
shard_size=100000    # utterances per shard
python=python3

help_message="Usage: $0 [options] <feats_scp> <km_dir> <out_dir>
Writes <out_dir>/tokens (Kaldi text: <utt> <t1> <t2> ...), <out_dir>/tokens.scp (int32 vectors),
<out_dir>/utt2num_frames and <out_dir>/meta.json, in the order of <feats_scp>: one token in
[0, K) per frame. With --shards true, also <out_dir>/shards/tokens.json and its .bin/.idx
shards (pyscripts/write_shards.py). With --dedup true, tokens hold units (runs of a token
collapsed) and <out_dir>/tokens_durations{,.scp} the frames of each.
Options:
  --nj <$nj> --cmd <$cmd> --device <$device> --batch_frames <$batch_frames>
  --num_threads <$num_threads> --shards <$shards> --shard_size <$shard_size>
  --dedup <$dedup> --python <$python>"

. "$root/scripts/lib/common.sh"

. "$root/utils/parse_options.sh"
if [ $# -ne 3 ]; then
    echo "$help_message" >&2
    exit 1
fi
feats=$1
km=$2
out=$3
export PATH="$root/utils:$PATH"

for opt in nj batch_frames num_threads shard_size; do
    if ! [[ ${!opt} =~ ^[1-9][0-9]*$ ]]; then
        log "ERROR: --$opt must be a positive integer, got '${!opt}'"
        exit 1
    fi
done
if [ "$dedup" != true ] && [ "$dedup" != false ]; then
    log "ERROR: --dedup must be true or false, got '$dedup'"
    exit 1
fi
require_device "$device"
require_speechdump "$python"
[ -f "$feats" ] || { log "ERROR: $feats is missing"; exit 1; }
[ -d "$km" ] || { log "ERROR: $km is missing (no k-means model: run scripts/learn_kmeans.sh)"; exit 1; }
for f in centers.npy kmeans.json; do
    [ -f "$km/$f" ] || { log "ERROR: $km/$f is missing (run scripts/learn_kmeans.sh)"; exit 1; }
done

num_utts=$(awk 'NF' "$feats" | wc -l)
if [ "$num_utts" -eq 0 ]; then
    log "ERROR: $feats holds no utterances"
    exit 1
fi
# Pre-flight: the model against the features, before anything is written or launched.
if ! frame_shift=$("$python" "$root/pyscripts/dump_tokens.py" check "$feats" "$km"); then
    log "ERROR: nothing was written; the line above says what is wrong"
    exit 1
fi
if [ "$nj" -gt "$num_utts" ]; then
    log "only $num_utts utterances: using $num_utts jobs instead of $nj"
    nj=$num_utts
fi

mkdir -p "$out/log"
stage_lock "$out" "${0##*/}"
rm -f "$out/tokens" "$out/tokens.scp" "$out/utt2num_frames" "$out/meta.json"  # stale until merged
rm -f "$out/tokens_durations" "$out/tokens_durations.scp"
split=$out/split$nj
mkdir -p "$split"
parts=()
for n in $(seq "$nj"); do parts+=("$split/feats.$n.scp"); done
split_scp.pl "$feats" "${parts[@]}"

log "assigning tokens to the $num_utts utterances of $feats in $nj jobs on $device" \
    "(logs: $out/log/dump_tokens.*.log)"
log_stem=$out/log/dump_tokens
run_jobs "$python" "$root/pyscripts/dump_tokens.py" job --device "$device" \
    --batch_frames "$batch_frames" --num_threads "$num_threads" --frame_shift "$frame_shift" \
    --dedup "$dedup" \
    "$km" "$split/feats.JOB.scp" "$split" JOB

log "merging $nj jobs in the order of $feats"
"$python" "$root/pyscripts/merge_outputs.py" --tag tokens --nj "$nj" --reference "$feats" \
    --kmeans "$km" --start_time "$stage_start" "$split" "$out"
if [ "$shards" = true ]; then
    rm -rf "$out/shards"
    log "writing token shards of $shard_size utterances in $out/shards"
    "$python" "$root/pyscripts/write_shards.py" --shard_size "$shard_size" \
        "$out/tokens.scp" "$out/shards/tokens"
fi
log "done: $out/tokens $out/tokens.scp"
