#!/usr/bin/env bash
# Learns k-means centers for discrete speech tokens from a feats.scp: mini-batch k-means
# (MiniBatchKMeans.partial_fit) streamed over the frames of a seeded sample of the utterances, read
# one utterance at a time on every pass, so memory does not grow with the corpus; as one job
# through --cmd (one training per km_dir at a time: a lock; SIGTERM/SIGINT stop the job; a failed
# job's reason on the console). Reproducible for a fixed seed on one machine; a rerun retrains and
# replaces the model atomically (kmeans.json, written last, marks a complete model).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

n_clusters=100    # number of clusters (token vocabulary size K)
portion=0.1       # share of the utterances sampled for training, in (0, 1]
seed=0            # seed of the utterance sample, the seeding sample, k-means++ and the pass orders
max_frames=0      # cap on the training frames (0: all frames of the sampled utterances)
batch_size=10000  # frames per mini-batch (partial_fit); k-means++ seeds on 3 x max(this, K) frames
max_iter=100      # passes over the training frames at most (fewer once a pass gains under 0.1 %)
n_init=3          # k-means++ seedings tried on the seeding sample; the best is trained
num_threads=1     # CPUs of the training job (the launcher's --num-threads)
cmd=run.pl        # launcher with Kaldi's command line (run.pl, "slurm.pl --mem 32G", ...)
python=python3

help_message="Usage: $0 [options] <feats_scp> <km_dir>
Writes <km_dir>/centers.npy (K x dim float32; no pickle), <km_dir>/centers.mat (the same, as a
Kaldi binary matrix) and <km_dir>/kmeans.json (settings and training figures).
Options:
  --n_clusters <$n_clusters> --portion <$portion> --seed <$seed> --max_frames <$max_frames>
  --batch_size <$batch_size> --max_iter <$max_iter> --n_init <$n_init>
  --num_threads <$num_threads> --cmd <$cmd> --python <$python>"

. "$root/scripts/lib/common.sh"

. "$root/utils/parse_options.sh"
if [ $# -ne 2 ]; then
    echo "$help_message" >&2
    exit 1
fi
feats_scp=$1
km_dir=$2

int_re='^[0-9]+$'
for opt in n_clusters seed max_frames batch_size max_iter n_init num_threads; do
    if ! [[ ${!opt} =~ $int_re ]]; then
        log "ERROR: --$opt must be a non-negative integer, got '${!opt}'"
        exit 1
    fi
done
if [ "$n_clusters" -lt 1 ] || [ "$batch_size" -lt 1 ] || [ "$max_iter" -lt 1 ] \
        || [ "$n_init" -lt 1 ] || [ "$num_threads" -lt 1 ]; then
    log "ERROR: --n_clusters, --batch_size, --max_iter, --n_init and --num_threads must be positive"
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
stage_lock "$km_dir" "${0##*/}"
# One job, run as the stages run theirs (run_jobs: signals passed on, the reason of a failure).
nj=1
device=cpu
cmd="$cmd --num-threads $num_threads"
log_stem=$km_dir/log/learn_kmeans
job_log=$log_stem.1.log
log "learning $n_clusters centers on $feats_scp (portion $portion, seed $seed) into $km_dir" \
    "(log: $job_log)"
run_jobs "$python" "$root/pyscripts/learn_kmeans.py" --n_clusters "$n_clusters" \
    --portion "$portion" --seed "$seed" --max_frames "$max_frames" --batch_size "$batch_size" \
    --max_iter "$max_iter" --n_init "$n_init" --num_threads "$num_threads" "$feats_scp" "$km_dir"
# The job's summary (centers, frames, inertia) for the stage's own output.
grep -F -e " centers of dimension " -e "model: " "$job_log" || true
log "done: $km_dir/centers.npy $km_dir/kmeans.json"
