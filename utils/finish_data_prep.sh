#!/usr/bin/env bash
# The common end of a corpus's local/data.sh: turns the unsorted tables a preparation script
# collected in <tmp_dir> into a sorted Kaldi data dir, checks it and prints what it holds.
#   <tmp_dir>/wav.scp, utt2spk   "<utt> <path>", "<utt> <spk>" (required)
#   <tmp_dir>/text               "<utt> <transcript>" for the utterances that have one
#   <tmp_dir>/no_text            "<utt>" for those that have none (kept in wav.scp, not in text)
#   <tmp_dir>/speaker2gender     "<spk> m|f" for any speakers of the corpus (optional)
# With --text false (a corpus without transcripts: speaker corpora), text and no_text are not
# read and <data_dir> gets no text.
set -euo pipefail

text=true                 # false: the corpus has no transcripts
missing_text=transcript   # what an utterance without text lacks, for the summary
help_message="Usage: $0 [--text true|false] [--missing_text <what>] <tmp_dir> <data_dir> <source>
  <source> names the corpus part in messages; --text <$text>; --missing_text <$missing_text>"
. "$(dirname "${BASH_SOURCE[0]}")/parse_options.sh"
if [ $# -ne 3 ]; then
    echo "$help_message" >&2
    exit 1
fi
tmp=$1 data=$2 source=$3
me=${0##*/}
for f in wav.scp utt2spk; do
    [ -f "$tmp/$f" ] || { echo "$me: $tmp/$f is missing" >&2; exit 1; }
done
mkdir -p "$data"
tables=(wav.scp utt2spk)
if [ "$text" = true ]; then
    touch "$tmp/text" "$tmp/no_text"
    tables+=(text)
else
    rm -f "$data/text"  # from an earlier preparation
fi
export LC_ALL=C
for f in "${tables[@]}"; do sort "$tmp/$f" > "$data/$f"; done
dups=$(cut -d' ' -f1 "$data/wav.scp" | uniq -d | head -n 5 | tr '\n' ' ')
[ -z "$dups" ] || { echo "$me: duplicate utterance ids in $source: $dups" >&2; exit 1; }
# spk2utt sorted by speaker, whether or not speaker ids are prefixes of utterance ids.
"$(dirname "${BASH_SOURCE[0]}")/utt2spk_to_spk2utt.pl" "$data/utt2spk" | sort -k1,1 \
    > "$data/spk2utt"

if [ -f "$tmp/speaker2gender" ]; then
    awk -v me="$me" -v out="$data/spk2gender" '
        NR == FNR { gender[$1] = $2; next }
        $1 in gender { print $1, gender[$1] > out; next }
        { missing = missing " " $1 }
        END { if (missing != "") print me ": WARNING: no gender for" missing > "/dev/stderr" }
    ' "$tmp/speaker2gender" "$data/spk2utt"
fi

n_wav=$(wc -l < "$data/wav.scp")
if [ "$text" = false ]; then
    echo "$me: prepared $data from $source ($n_wav recordings, $(wc -l < "$data/spk2utt")" \
        "speakers, no transcripts)"
    exit 0
fi
n_text=$(wc -l < "$data/text")
if [ "$n_text" -eq 0 ]; then
    echo "$me: none of the $n_wav recordings of $source has a $missing_text" >&2
    exit 1
fi
echo "$me: prepared $data from $source ($n_wav recordings, $(wc -l < "$data/spk2utt")" \
    "speakers, $n_text with a $missing_text)"
if [ "$n_text" -lt "$n_wav" ]; then
    echo "$me: $((n_wav - n_text)) recordings have no $missing_text" \
        "(kept in wav.scp, left out of text):" \
        "$(sort "$tmp/no_text" | awk 'NR <= 10 { printf "%s ", $1 } NR == 11 { printf "..." }')"
fi
