#!/usr/bin/env bash
# The speaker-embedding stage on the real speech samples, sequentially (--nj 1) and in parallel
# (run.pl --nj 4, and slurm.pl --nj 4 when a Slurm cluster answers): the utterance and speaker
# scps must have the same keys in the same order and values within 1e-6, aligned with text.
# Exits non-zero on any difference.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${python:-$root/tools/venv/bin/python}
PATH="$(dirname "$python"):$root/utils:$PATH"
export PATH LC_ALL=C PYTHONUNBUFFERED=1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

log() { echo "$(date '+%Y-%m-%dT%H:%M:%S') test_parallel_vs_sequential.sh: $*"; }

# The sample corpus as a data dir with absolute paths.
corpus=$root/samples/real_speech
data=$work/data
mkdir -p "$data"
awk -v dir="$corpus" '{ print $1, dir "/" $2 }' "$corpus/wav.scp" > "$data/wav.scp"
cp "$corpus"/{utt2spk,text,utt2dur} "$data/"
utt2spk_to_spk2utt.pl "$data/utt2spk" > "$data/spk2utt"

launchers=("run.pl:1" "run.pl:4")
if command -v sinfo >/dev/null && timeout 10 sinfo -h >/dev/null 2>&1; then
    launchers+=("slurm.pl --config $root/egs/sample_speakers/spk1/conf/slurm.conf:4")
else
    log "no Slurm cluster answers: slurm.pl is not compared (tools/slurm/start.sh starts one)"
fi

n=0
for launcher in "${launchers[@]}"; do
    cmd=${launcher%:*} nj=${launcher##*:}
    n=$((n + 1))
    log "extracting with '$cmd' --nj $nj"
    (cd "$work" && "$root/scripts/extract_spk_embed.sh" --cmd "$cmd" --nj "$nj" \
        data "out$n" > "out$n.log" 2>&1) || { cat "$work/out$n.log"; exit 1; }
done

status=0
reference=$work/out1
for i in $(seq 2 "$n"); do
    for scp in resemblyzer.scp spk_resemblyzer.scp; do
        if result=$(cd "$work" && "$python" "$root/pyscripts/compare_scp.py" --tolerance 1e-6 \
                out1/$scp "out$i/$scp" 2>&1); then
            log "${launchers[$((i - 1))]%:*} --nj ${launchers[$((i - 1))]##*:} vs --nj 1, $scp: $result"
        else
            log "DIFFERENT: ${launchers[$((i - 1))]} $scp: $result"
            status=1
        fi
    done
done
if ! cmp -s <(cut -d' ' -f1 "$reference/resemblyzer.scp") <(cut -d' ' -f1 "$data/text"); then
    log "DIFFERENT: $reference/resemblyzer.scp is not aligned with text"
    status=1
fi
[ $status -eq 0 ] && log "all outputs equal the sequential run and are aligned with text"
exit $status
