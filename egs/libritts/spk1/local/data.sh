#!/usr/bin/env bash
# Prepares one data dir per LibriTTS (or LibriTTS-R) subset, named with '_' for '-' (dev-clean ->
# dev_clean), from
#   LibriTTS/<subset>/<reader>/<chapter>/<reader>_<chapter>_<para>_<sent>.wav  (24 kHz)
#   the same path with .normalized.txt or .original.txt for .wav (one utterance's text)
#   LibriTTS/speakers.tsv (READER GENDER SUBSET NAME, tab-separated, header line) or, without
#   it, LibriTTS/SPEAKERS.txt (LibriSpeech's "ID | SEX | ..." format); without both, no spk2gender.
# Utterance ids are the file names (84_121123_000007_000000, as in ESPnet's LibriTTS recipe).
# Speakers are readers, and a speaker id is the reader followed by "_" (84_): an utterance id then
# begins with its speaker id and Kaldi's sort orders agree ("8842_..." sorts before "84_..."
# because '8' < '_', and so does "8842_" before "84_", while "84" would sort before "8842").
# A recording without its text file (or with an empty one) is kept in wav.scp but left out of
# text; stage 3 skips and lists it.
set -euo pipefail
export LC_ALL=C

corpus=/path/to/LibriTTS
subsets="dev-clean test-clean"
text_kind=normalized

help_message="Usage: $0 [--corpus <dir>] [--subsets <subset>[,<subset>...]]
       [--text_kind normalized|original] <datadir>
Writes <datadir>/<subset with _ for -> for each subset: wav.scp utt2spk spk2utt text spk2gender
(sorted, absolute audio paths).
  --corpus <$corpus>  the LibriTTS/ (or LibriTTS_R/) directory or the directory holding it
  --subsets <$subsets>  subset directories, separated by spaces or commas
  --text_kind <$text_kind>  text from <utt>.normalized.txt or <utt>.original.txt"
. utils/parse_options.sh
if [ $# -ne 1 ]; then
    echo "$help_message" >&2
    exit 1
fi
die() { echo "$0: ERROR: $*" >&2; exit 1; }
case $text_kind in
    normalized | original) ;;
    *) die "--text_kind must be normalized or original, not '$text_kind'" ;;
esac
subsets=${subsets//,/ }
[ -n "${subsets// /}" ] || die "--subsets is empty"

[ -d "$corpus" ] || die "LibriTTS directory '$corpus' does not exist (pass --corpus <dir>)"
corpus=$(cd "$corpus" && pwd)
case $corpus in
    *[[:space:]]*) die "corpus path '$corpus' has whitespace, which Kaldi's wav.scp cannot hold" ;;
esac
root=$corpus
if [ -d "$corpus/LibriTTS" ] && [ -d "$corpus/LibriTTS_R" ]; then
    die "$corpus holds both LibriTTS/ and LibriTTS_R/: pass --corpus" \
        "$corpus/LibriTTS or $corpus/LibriTTS_R"
elif [ -d "$corpus/LibriTTS" ]; then
    root=$corpus/LibriTTS
elif [ -d "$corpus/LibriTTS_R" ]; then
    root=$corpus/LibriTTS_R
fi
for subset in $subsets; do
    [[ $subset =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] || die "bad subset name '$subset'"
    if [ ! -d "$root/$subset" ]; then
        have=$(find -L "$root" -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | sort | tr '\n' ' ')
        die "subset $root/$subset is missing (there: ${have:-nothing})"
    fi
done
if [ -f "$root/speakers.tsv" ]; then
    speakers=$root/speakers.tsv
elif [ -f "$root/SPEAKERS.txt" ]; then
    speakers=$root/SPEAKERS.txt
else
    speakers=
    echo "$0: WARNING: neither $root/speakers.tsv nor $root/SPEAKERS.txt: no spk2gender" >&2
fi

for subset in $subsets; do
    data=$1/${subset//-/_}
    mkdir -p "$data"
    rm -rf "$data"/{wav.scp,utt2spk,spk2utt,text,spk2gender,utt2dur,segments,reco2dur,.backup}
    tmp=$(mktemp -d "$data/.tmp.XXXXXX")
    trap 'rm -rf "$tmp"' EXIT

    src=$root/$subset
    find -L "$src" -mindepth 3 -maxdepth 3 -type f -name '*.wav' | sort > "$tmp/files"
    [ -s "$tmp/files" ] || die "no <reader>/<chapter>/*.wav files under $src"

    awk -v me="$0" -v dir="$tmp" -v kind="$text_kind" '
        function fail(msg) { print me ": ERROR: " msg > "/dev/stderr"; bad = 1; exit 1 }
        function read_text(f,    line, s) {  # all lines joined, whitespace squeezed; "" if none
            s = ""
            while ((getline line < f) > 0) s = s " " line
            close(f)
            gsub(/[ \t\r]+/, " ", s); sub(/^ /, "", s); sub(/ $/, "", s)
            return s
        }
        {
            path = $0
            if (path ~ /[ \t]/) fail("file name with whitespace: " path)
            n = split(path, part, "/"); reader = part[n - 2]; chapter = part[n - 1]
            utt = substr(part[n], 1, length(part[n]) - 4)
            if (index(utt, reader "_" chapter "_") != 1 || utt == reader "_" chapter "_")
                fail("unexpected file name " path " (expected " reader "/" chapter "/" reader "_" \
                     chapter "_<para>_<sent>.wav)")
            print utt, path > (dir "/wav.scp")
            print utt, reader "_" > (dir "/utt2spk")
            t = read_text(substr(path, 1, length(path) - 4) "." kind ".txt")
            if (t != "") print utt, t > (dir "/text"); else print utt > (dir "/no_text")
        }
        END { if (bad) exit 1 }' "$tmp/files"

    if [ -n "$speakers" ]; then
        # speakers.tsv: READER<tab>GENDER<tab>...; SPEAKERS.txt: ";" comments, "ID | SEX | ...".
        # Speaker ids carry the "_" that keeps Kaldi's two sort orders in agreement.
        awk -v name="${speakers##*/}" '
            { gsub(/\r/, "") }
            $0 ~ /^[ \t]*;/ { next }
            { nf = split($0, f, (name == "speakers.tsv") ? "\t" : "|") }
            nf < 2 { next }
            { id = f[1]; g = tolower(f[2]); gsub(/[ \t]/, "", id); gsub(/[ \t]/, "", g) }
            g == "m" || g == "f" { print id "_", g }' "$speakers" > "$tmp/speaker2gender"
    fi
    utils/finish_data_prep.sh --missing_text ".$text_kind.txt" "$tmp" "$data" "$src"
    rm -rf "$tmp"
done
