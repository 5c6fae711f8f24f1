#!/usr/bin/env bash
# Learns k-means centers for discrete speech tokens from a feats.scp: MiniBatchKMeans on the frames
# of a seeded sample of the utterances, as one job through --cmd. Reproducible for a fixed seed
# on one machine; a rerun retrains and replaces the model atomically (kmeans.json, written
# last, marks a complete model).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

n_clusters=100    # number of clusters (token vocabulary size K)
portion=0.1       # share of the utterances sampled for training, in (0, 1]
seed=0            # seed of the utterance sample and of MiniBatchKMeans
max_frames=0      # cap on the training frames (0: all frames of the sampled utterances)
batch_size=10000  # MiniBatchKMeans batch size
num_threads=1     # CPUs of the training job (the launcher's --num-threads)
cmd=run.pl        # launcher with Kaldi's command line (run.pl, "slurm.pl --mem 32G", ...)
python=python3

help_message="Usage: $0 [options] <feats_scp> <km_dir>
Writes <km_dir>/centers.npy (K x dim float32; no pickle), <km_dir>/centers.mat (the same, as a
Kaldi binary matrix) and <km_dir>/kmeans.json (settings and training figures).
Options:
  --n_clusters <$n_clusters> --portion <$portion> --seed <$seed> --max_frames <$max_frames>
  --batch_size <$batch_size> --num_threads <$num_threads> --cmd <$cmd> --python <$python>"

. "$root/scripts/lib/common.sh"

. "$root/utils/parse_options.sh"
if [ $# -ne 2 ]; then
    echo "$help_message" >&2
    exit 1
fi
feats_scp=$1
km_dir=$2

int_re='^[0-9]+$'
for opt in n_clusters seed max_frames batch_size num_threads; do
    if ! [[ ${!opt} =~ $int_re ]]; then
        log "ERROR: --$opt must be a non-negative integer, got '${!opt}'"
        exit 1
    fi
done
if [ "$n_clusters" -lt 1 ] || [ "$batch_size" -lt 1 ] || [ "$num_threads" -lt 1 ]; then
    log "ERROR: --n_clusters, --batch_size and --num_threads must be positive"
    exit 1
fi
if ! awk -v p="$portion" 'BEGIN { exit !(p ~ /^([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?$/ && p > 0 && p <= 1) }'; then
    log "ERROR: --portion must be in (0, 1], got '$portion'"
    exit 1
fi
require_speechdump "$python"
[ -f "$feats_scp" ] || { log "ERROR: $feats_scp is missing"; exit 1; }
[ -s "$feats_scp" ] || { log "ERROR: $feats_scp is empty"; exit 1; }

export PATH="$root/utils:$PATH"
mkdir -p "$km_dir/log"
job_log=$km_dir/log/learn_kmeans.log
log "learning $n_clusters centers on $feats_scp (portion $portion, seed $seed) into $km_dir" \
    "(log: $job_log)"
# $cmd is word-split on purpose: it may carry launcher options ("slurm.pl --mem 32G").
if ! $cmd --num-threads "$num_threads" "$job_log" \
        "$python" "$root/pyscripts/learn_kmeans.py" --n_clusters "$n_clusters" \
        --portion "$portion" --seed "$seed" --max_frames "$max_frames" \
        --batch_size "$batch_size" --num_threads "$num_threads" "$feats_scp" "$km_dir"; then
    log "ERROR: k-means training on $feats_scp failed (log: $job_log)"
    if [ -f "$job_log" ]; then
        grep -h "^ERROR" "$job_log" >&2 || tail -n 20 "$job_log" >&2
    fi
    exit 1
fi
# The job's summary (centers, frames, inertia) for the stage's own output.
grep -F -e " centers of dimension " -e "model: " "$job_log" || true
log "done: $km_dir/centers.npy $km_dir/kmeans.json"
