#!/usr/bin/env bash
# Prepares <datadir>/all from VCTK, either layout:
#   VCTK-Corpus-0.92: wav48_silence_trimmed/p225/p225_001_mic1.flac (and _mic2.flac)
#   VCTK-Corpus 0.80: wav48/p225/p225_001.wav
# with txt/p225/p225_001.txt and speaker-info.txt (ID AGE GENDER ACCENTS REGION ...).
# Utterance ids are the file names without microphone and extension (p225_001, as in ESPnet's
# VCTK recipes), speaker ids the directory names (p225), so utterance ids begin with them (and no
# speaker id is a prefix of another, so sorting by utterance or by speaker gives one order).
#
# Recordings without a transcript (all of p315, and a few files of other speakers) are kept in
# wav.scp/utt2spk but left out of text. run.sh passes --fix_data false, so stage 2 keeps them and
# the extraction stage (stage 3) skips them and lists them in <dumpdir>/<tag>/all/dropped_utts;
# with --fix_data true, stage 2's utils/fix_data_dir.sh removes them first.
set -euo pipefail
export LC_ALL=C

corpus=/path/to/VCTK-Corpus-0.92
mic=mic1

help_message="Usage: $0 [--corpus <dir>] [--mic mic1|mic2] <datadir>
Writes <datadir>/all: wav.scp utt2spk spk2utt text spk2gender (sorted, absolute audio paths).
  --corpus <$corpus>  VCTK-Corpus-0.92 (wav48_silence_trimmed/) or VCTK-Corpus 0.80 (wav48/),
                       with txt/ and speaker-info.txt
  --mic <$mic>  0.92 only: mic1 (DPA 4035 omni) or mic2 (Sennheiser MKH 800); a few speakers
                 (e.g. p280) have no mic2 recordings. 0.80 has one recording per utterance."
. utils/parse_options.sh
if [ $# -ne 1 ]; then
    echo "$help_message" >&2
    exit 1
fi
die() { echo "$0: ERROR: $*" >&2; exit 1; }

[ -d "$corpus" ] || die "VCTK corpus directory '$corpus' does not exist (pass --corpus <dir>)"
corpus=$(cd "$corpus" && pwd)
case $corpus in
    *[[:space:]]*) die "corpus path '$corpus' has whitespace, which Kaldi's wav.scp cannot hold" ;;
esac
if [ -d "$corpus/wav48_silence_trimmed" ]; then
    audio=$corpus/wav48_silence_trimmed  # VCTK-Corpus-0.92
    case $mic in
        mic1 | mic2) ;;
        *) die "--mic must be mic1 or mic2, not '$mic'" ;;
    esac
    suffix=_$mic.flac
elif [ -d "$corpus/wav48" ]; then
    audio=$corpus/wav48  # VCTK-Corpus 0.80
    [ "$mic" = mic1 ] ||
        die "--mic $mic: $corpus is VCTK 0.80 (wav48/), which has one recording per utterance"
    suffix=.wav
else
    die "$corpus has neither wav48_silence_trimmed/ (VCTK-Corpus-0.92) nor wav48/ (VCTK 0.80)"
fi
[ -d "$corpus/txt" ] || die "$corpus/txt (the transcripts) is missing"
[ -f "$corpus/speaker-info.txt" ] || die "$corpus/speaker-info.txt is missing"

data=$1/all
mkdir -p "$data"
rm -rf "$data"/{wav.scp,utt2spk,spk2utt,text,spk2gender,utt2dur,segments,reco2dur,.backup}
tmp=$(mktemp -d "$data/.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

find -L "$audio" -mindepth 2 -maxdepth 2 -type f -name "*$suffix" | sort > "$tmp/files"
[ -s "$tmp/files" ] || die "no */*$suffix files under $audio"

# One line per file: wav.scp, utt2spk and (when the transcript exists and is not empty) text.
awk -v me="$0" -v suffix="$suffix" -v txt="$corpus/txt" -v dir="$tmp" '
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
        n = split(path, part, "/"); spk = part[n - 1]; utt = part[n]
        utt = substr(utt, 1, length(utt) - length(suffix))
        if (index(utt, spk "_") != 1 || utt == spk "_")
            fail("unexpected file name " path " (expected " spk "/" spk "_<nnn>" suffix ")")
        print utt, path > (dir "/wav.scp")
        print utt, spk > (dir "/utt2spk")
        t = read_text(txt "/" spk "/" utt ".txt")
        if (t != "") print utt, t > (dir "/text"); else print utt > (dir "/no_text")
    }
    END { if (bad) exit 1 }' "$tmp/files"

# Gender (F/M, third column) of speaker-info.txt; 0.80 writes its ids without the "p".
awk '{ gsub(/\r/, "") } FNR == 1 && $1 == "ID" || NF < 3 { next }
     { id = ($1 ~ /^[0-9]+$/) ? "p" $1 : $1; g = tolower($3) }
     g == "m" || g == "f" { print id, g }' "$corpus/speaker-info.txt" > "$tmp/speaker2gender"
utils/finish_data_prep.sh "$tmp" "$data" "$audio"
