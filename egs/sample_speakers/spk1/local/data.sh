#!/usr/bin/env bash
# Prepares <datadir>/sample from the sample speakers corpus shipped in samples/real_speech, and
# for speaker verification (stage 5) <datadir>/sample_pieces with its trial list and
# <datadir>/sample_cohort (see below).
# wav.scp paths there are relative to the corpus; here they become absolute.
set -euo pipefail

corpus=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)/samples/real_speech

help_message="Usage: $0 [--corpus <dir>] <datadir>
  --corpus <$corpus>  a copy of the sample speakers corpus (Kaldi files + audio/)"
. utils/parse_options.sh
if [ $# -ne 1 ]; then
    echo "$help_message" >&2
    exit 1
fi
data=$1/sample
corpus=$(cd "$corpus" && pwd)

for f in wav.scp utt2spk text utt2dur spk2gender; do
    [ -f "$corpus/$f" ] || { echo "$0: $corpus/$f is missing" >&2; exit 1; }
done
mkdir -p "$data"
awk -v dir="$corpus" '{ print $1, dir "/" $2 }' "$corpus/wav.scp" > "$data/wav.scp"
cp "$corpus"/{utt2spk,text,utt2dur,spk2gender} "$data/"
utils/utt2spk_to_spk2utt.pl "$data/utt2spk" > "$data/spk2utt"
echo "$0: prepared $data ($(wc -l < "$data/wav.scp") recordings, $(wc -l < "$data/spk2utt") speakers)"

# Speakers with two utterances or more in text (those the stage extracts): their utterances are
# cut into pieces of 1 s (set sample_pieces), and every two pieces of different recordings make a
# trial. Every recording of the other speakers joins set sample_cohort, the AS-norm cohort.
trial_utts=$data/.trial_utt2spk
utils/filter_scp.pl "$data/text" "$data/utt2spk" \
    | awk '{ utts[$2] = utts[$2] " " $1; n[$2]++ }
           END { for (s in n) if (n[s] > 1) { k = split(utts[s], u, " ");
                                              for (i = 1; i <= k; i++) print u[i], s } }' \
    | LC_ALL=C sort > "$trial_utts"

pieces=$1/sample_pieces
mkdir -p "$pieces/trials"
utils/filter_scp.pl "$trial_utts" "$data/wav.scp" > "$pieces/wav.scp"
utils/filter_scp.pl "$trial_utts" "$data/utt2dur" \
    | awk '{ for (k = 0; k + 1 <= $2; k++)
                 printf "%s-p%02d %s %d %d\n", $1, k, $1, k, k + 1 }' > "$pieces/segments"
awk 'NR == FNR { spk[$1] = $2; next } { print $1, spk[$2] }' "$trial_utts" "$pieces/segments" \
    > "$pieces/utt2spk"
awk '{ print $1, "1.000" }' "$pieces/segments" > "$pieces/utt2dur"
utils/utt2spk_to_spk2utt.pl "$pieces/utt2spk" > "$pieces/spk2utt"
awk 'NR == FNR { spk[$1] = $2; next }
     { piece[FNR] = $1; reco[FNR] = $2; n = FNR }
     END { for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (reco[i] != reco[j])
               print piece[i], piece[j], (spk[reco[i]] == spk[reco[j]] ? "target" : "nontarget") }' \
    "$trial_utts" "$pieces/segments" > "$pieces/trials/sample_pieces"

cohort=$1/sample_cohort
mkdir -p "$cohort"
awk 'NR == FNR { trial[$2] = 1; next } !($2 in trial)' "$trial_utts" "$data/utt2spk" \
    > "$cohort/utt2spk"
for f in wav.scp utt2dur; do
    utils/filter_scp.pl "$cohort/utt2spk" "$data/$f" > "$cohort/$f"
done
utils/utt2spk_to_spk2utt.pl "$cohort/utt2spk" > "$cohort/spk2utt"
rm "$trial_utts"
trials=$pieces/trials/sample_pieces
echo "$0: prepared $pieces ($(wc -l < "$pieces/segments") pieces of 1 s of" \
    "$(wc -l < "$pieces/spk2utt") speakers; trials $trials: $(grep -c ' target$' "$trials")" \
    "target, $(grep -c nontarget "$trials") non-target) and $cohort" \
    "($(wc -l < "$cohort/spk2utt") speakers, the cohort)"
