#!/usr/bin/env bash
# Prepares one data dir per LibriSpeech subset, named with '_' for '-' (dev-clean -> dev_clean),
# from
#   LibriSpeech/<subset>/<spk>/<chapter>/<spk>-<chapter>-<utt>.flac
#   LibriSpeech/<subset>/<spk>/<chapter>/<spk>-<chapter>.trans.txt  (lines "<utt-id> TEXT")
#   LibriSpeech/SPEAKERS.TXT  (";" comments, then "ID | SEX | SUBSET | MINUTES | NAME")
# Utterance ids are the file names (1272-128104-0000, as in Kaldi's and ESPnet's recipes); speakers
# are readers (1272), not reader-chapter pairs, so that the speaker embeddings are per person.
# A recording without a line in its trans.txt is kept in wav.scp but left out of text (stage 3
# skips and lists it); a trans.txt line without a recording is left out.
set -euo pipefail
export LC_ALL=C

corpus=/path/to/LibriSpeech
subsets="dev-clean test-clean"

help_message="Usage: $0 [--corpus <dir>] [--subsets <subset>[,<subset>...]] <datadir>
Writes <datadir>/<subset with _ for -> for each subset: wav.scp utt2spk spk2utt text spk2gender
(sorted, absolute audio paths).
  --corpus <$corpus>  the LibriSpeech/ directory or the directory holding it
  --subsets <$subsets>  subset directories, separated by spaces or commas"
. utils/parse_options.sh
if [ $# -ne 1 ]; then
    echo "$help_message" >&2
    exit 1
fi
die() { echo "$0: ERROR: $*" >&2; exit 1; }
subsets=${subsets//,/ }
[ -n "${subsets// /}" ] || die "--subsets is empty"

[ -d "$corpus" ] || die "LibriSpeech directory '$corpus' does not exist (pass --corpus <dir>)"
corpus=$(cd "$corpus" && pwd)
case $corpus in
    *[[:space:]]*) die "corpus path '$corpus' has whitespace, which Kaldi's wav.scp cannot hold" ;;
esac
root=$corpus
[ -d "$corpus/LibriSpeech" ] && root=$corpus/LibriSpeech
for subset in $subsets; do
    [[ $subset =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] || die "bad subset name '$subset'"
    if [ ! -d "$root/$subset" ]; then
        have=$(find -L "$root" -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | sort | tr '\n' ' ')
        die "subset $root/$subset is missing (there: ${have:-nothing})"
    fi
done
speakers=$root/SPEAKERS.TXT
[ -f "$speakers" ] || echo "$0: WARNING: $speakers is missing: no spk2gender" >&2

for subset in $subsets; do
    data=$1/${subset//-/_}
    mkdir -p "$data"
    rm -rf "$data"/{wav.scp,utt2spk,spk2utt,text,spk2gender,utt2dur,segments,reco2dur,.backup}
    tmp=$(mktemp -d "$data/.tmp.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT

    src=$root/$subset
    find -L "$src" -mindepth 3 -maxdepth 3 -type f -name '*.flac' | sort > "$tmp/files"
    [ -s "$tmp/files" ] || die "no <spk>/<chapter>/*.flac files under $src"
    find -L "$src" -mindepth 3 -maxdepth 3 -type f -name '*.trans.txt' | sort > "$tmp/trans_files"
    [ -s "$tmp/trans_files" ] || die "no <spk>/<chapter>/*.trans.txt files under $src"

    # The transcripts of the trans.txt files listed first, then one line per recording.
    awk -v me="$0" -v dir="$tmp" '
        function fail(msg) { print me ": ERROR: " msg > "/dev/stderr"; bad = 1; exit 1 }
        NR == FNR {
            while ((getline line < $0) > 0) {
                gsub(/[ \t\r]+/, " ", line); sub(/^ /, "", line); sub(/ $/, "", line)
                if (line == "") continue
                key = line; sub(/ .*/, "", key)
                t = substr(line, length(key) + 2)
                if (t != "") text[key] = t
            }
            close($0)
            next
        }
        {
            path = $0
            if (path ~ /[ \t]/) fail("file name with whitespace: " path)
            n = split(path, part, "/"); spk = part[n - 2]; chapter = part[n - 1]
            utt = substr(part[n], 1, length(part[n]) - 5)
            if (index(utt, spk "-" chapter "-") != 1 || utt == spk "-" chapter "-")
                fail("unexpected file name " path " (expected " spk "/" chapter "/" spk "-" \
                     chapter "-<nnnn>.flac)")
            print utt, path > (dir "/wav.scp")
            print utt, spk > (dir "/utt2spk")
            if (utt in text) print utt, text[utt] > (dir "/text"); else print utt > (dir "/no_text")
        }
        END { if (bad) exit 1 }' "$tmp/trans_files" "$tmp/files"

    if [ -f "$speakers" ]; then  # SPEAKERS.TXT: ";" comments, "ID | SEX | SUBSET | ..."
        awk -F'|' '$0 ~ /^[ \t]*;/ || NF < 2 { next }
                   { id = $1; g = tolower($2); gsub(/[ \t\r]/, "", id); gsub(/[ \t\r]/, "", g) }
                   g == "m" || g == "f" { print id, g }' "$speakers" > "$tmp/speaker2gender"
    fi
    utils/finish_data_prep.sh "$tmp" "$data" "$src"
    rm -rf "$tmp"
done
