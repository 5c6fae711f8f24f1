#!/usr/bin/env bash
# Prepares <datadir>/plain from the sample speakers corpus shipped in samples/real_speech: the
# plain run every packed format is compared with. wav.scp paths there are relative to the
# corpus; here they become absolute.
#
# No text: the speaker stage embeds the ids of text when there is one (15 of the 26 utterances
# are transcribed), and of wav.scp otherwise, so every utterance is embedded here. The packs
# (local/pack.py) carry no transcripts either, so the imported data dirs have no text.
set -euo pipefail

corpus=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)/samples/real_speech

help_message="Usage: $0 [--corpus <dir>] <datadir>
  --corpus <$corpus>  a copy of the sample speakers corpus (Kaldi files + audio/)"
. utils/parse_options.sh
if [ $# -ne 1 ]; then
    echo "$help_message" >&2
    exit 1
fi
data=$1/plain
corpus=$(cd "$corpus" && pwd)

for f in wav.scp utt2spk utt2dur spk2gender; do
    [ -f "$corpus/$f" ] || { echo "$0: $corpus/$f is missing" >&2; exit 1; }
done
mkdir -p "$data"
rm -f "$data/text"
awk -v dir="$corpus" '{ print $1, dir "/" $2 }' "$corpus/wav.scp" > "$data/wav.scp"
cp "$corpus"/{utt2spk,utt2dur,spk2gender} "$data/"
utils/utt2spk_to_spk2utt.pl "$data/utt2spk" > "$data/spk2utt"
echo "$0: prepared $data ($(wc -l < "$data/wav.scp") recordings, $(wc -l < "$data/spk2utt") speakers)"
