#!/usr/bin/env bash
# Discrete speech tokens: the nearest k-means center (scripts/learn_kmeans.sh) of every frame of a
# feats.scp. Splits the scp into jobs run through --cmd, merges them in the order of the scp and
# checks the result. Rerunnable: finished jobs are skipped.
set -euo pipefail
stage_start=$(date +%s.%N)
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

nj=4                 # number of parallel jobs
cmd=run.pl           # launcher with Kaldi's command line (run.pl, slurm.pl, queue.pl, ...)
device=cpu           # cpu; cuda: each job gets its own GPU through the launcher's --gpu 1;
                     # cuda:N: every job uses GPU N as the machine numbers it (no --gpu)
batch_frames=65536   # frames (of many utterances) per distance matmul
num_threads=1        # torch threads per job: nj x num_threads should not exceed the cores
python=python3

help_message="Usage: $0 [options] <feats_scp> <km_dir> <out_dir>
Writes <out_dir>/tokens (Kaldi text: <utt> <t1> <t2> ...), <out_dir>/tokens.scp (int32 vectors)
and <out_dir>/utt2num_frames, in the order of <feats_scp>: one token in [0, K) per frame.
Options:
  --nj <$nj> --cmd <$cmd> --device <$device> --batch_frames <$batch_frames>
  --num_threads <$num_threads> --python <$python>"

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

for opt in nj batch_frames num_threads; do
    if ! [[ ${!opt} =~ ^[1-9][0-9]*$ ]]; then
        log "ERROR: --$opt must be a positive integer, got '${!opt}'"
        exit 1
    fi
done
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
if [ "$nj" -gt "$num_utts" ]; then
    log "only $num_utts utterances: using $num_utts jobs instead of $nj"
    nj=$num_utts
fi

mkdir -p "$out/log"
rm -f "$out/tokens" "$out/tokens.scp" "$out/utt2num_frames"  # stale until merged again
split=$out/split$nj
mkdir -p "$split"
parts=()
for n in $(seq "$nj"); do parts+=("$split/feats.$n.scp"); done
# Only rewrite a part whose content changes, so that a rerun can recognise finished jobs.
split_scp.pl "$feats" "${parts[@]/%/.new}"
for p in "${parts[@]}"; do
    if cmp -s "$p.new" "$p"; then rm "$p.new"; else mv "$p.new" "$p"; fi
done

gpu_opt=()
[ "$device" = cuda ] && gpu_opt=(--gpu 1)
log "assigning tokens to the $num_utts utterances of $feats in $nj jobs on $device" \
    "(logs: $out/log/dump_tokens.*.log)"
# $cmd is word-split on purpose: it may carry launcher options ("slurm.pl --mem 8G").
if ! $cmd "${gpu_opt[@]}" JOB=1:"$nj" "$out/log/dump_tokens.JOB.log" \
        "$python" "$root/pyscripts/dump_tokens.py" job --device "$device" \
        --batch_frames "$batch_frames" --num_threads "$num_threads" \
        "$km" "$split/feats.JOB.scp" "$split" JOB; then
    log "ERROR: token assignment failed; the errors in the job logs:"
    grep -h "^ERROR" "$out"/log/dump_tokens.*.log | head -n 20 >&2 || true
    exit 1
fi

log "merging $nj jobs in the order of $feats"
"$python" "$root/pyscripts/dump_tokens.py" merge --nj "$nj" --start_time "$stage_start" \
    "$feats" "$km" "$split" "$out"
log "done: $out/tokens $out/tokens.scp"
