#!/usr/bin/env bash
# Prepares VoxCeleb for speaker verification, as WeSpeaker's examples/voxceleb/v2 does:
#   <datadir>/vox1      every VoxCeleb1 recording (dev and test), and in trials/ the cleaned
#                       VoxCeleb1-O, -E and -H lists (vox1_O, vox1_E, vox1_H), copied unchanged
#                       ("1|0 <path> <path>", paths relative to VoxCeleb1's wav/ directory;
#                       scripts/score_trials.sh maps them through wav.scp)
#   <datadir>/vox2_dev  with --vox2: the first --cohort_per_speaker recordings of each VoxCeleb2
#                       dev speaker, the AS-norm cohort, decoded from m4a by ffmpeg pipes
# Layouts:
#   <vox1>/wav/id10001/1zcIwhmdeo4/00001.wav  (dev and test merged, as WeSpeaker expects), or
#   <vox1>/dev/wav/... and <vox1>/test/wav/...  (the two archives unpacked side by side)
#   <vox1>/veri_test2.txt, list_test_all2.txt, list_test_hard2.txt (or in <vox1>/meta/)
#   <vox2>/dev/aac/id00012/21Uxsk56VDQ/00001.m4a  (or <vox2>/aac/...)
# Utterance ids are <spk>-<youtube id>-<nnnnn> (id10001-1zcIwhmdeo4-00001): Kaldi-safe, the
# speaker id first, and all speaker ids have one length, so sorting by utterance or by speaker
# gives one order. No text: the extraction stage embeds every wav.scp entry.
set -euo pipefail
export LC_ALL=C

vox1=/path/to/voxceleb1
vox2=
cohort_per_speaker=5
trials="O E H"

help_message="Usage: $0 [--vox1 <dir>] [--vox2 <dir>] [--cohort_per_speaker N] [--trials <lists>]
         <datadir>
Writes <datadir>/vox1 (wav.scp utt2spk spk2utt, trials/vox1_{O,E,H}) and, with --vox2,
<datadir>/vox2_dev (the cohort). Sorted, absolute audio paths.
  --vox1 <$vox1>  VoxCeleb1: wav/<spk>/<youtube id>/<nnnnn>.wav (or dev/wav/ and test/wav/) and
                  the cleaned trial lists (in the directory or its meta/)
  --vox2 <dir>    VoxCeleb2: dev/aac/<spk>/<youtube id>/<nnnnn>.m4a (or aac/); needs ffmpeg
  --cohort_per_speaker <$cohort_per_speaker>  VoxCeleb2 dev recordings kept per speaker (the
                  first ones, sorted)
  --trials <\"$trials\">  which cleaned lists to prepare, separated by spaces or commas:
                  O (veri_test2.txt), E (list_test_all2.txt), H (list_test_hard2.txt)"
. utils/parse_options.sh
if [ $# -ne 1 ]; then
    echo "$help_message" >&2
    exit 1
fi
die() { echo "$0: ERROR: $*" >&2; exit 1; }
trials=${trials//,/ }
meta_url=https://mm.kaist.ac.kr/datasets/voxceleb/meta/
site_url=https://www.robots.ox.ac.uk/~vgg/data/voxceleb/

# Absolute path of an existing directory, without whitespace (Kaldi's wav.scp cannot hold it).
abs_dir() {
    local dir
    dir=$(cd "$1" && pwd)
    case $dir in
        *[[:space:]]*) die "$2 path '$dir' has whitespace, which Kaldi's wav.scp cannot hold" ;;
    esac
    echo "$dir"
}

[[ $cohort_per_speaker =~ ^[1-9][0-9]*$ ]] ||
    die "--cohort_per_speaker must be a positive integer, got '$cohort_per_speaker'"
if [ -z "$vox1" ] || [ ! -d "$vox1" ]; then
    die "VoxCeleb1 directory '$vox1' does not exist (set VOXCELEB1 or pass --vox1 <dir>)"
fi
vox1=$(abs_dir "$vox1" VoxCeleb1)
wav_dirs=()
if [ -d "$vox1/wav" ]; then
    wav_dirs=("$vox1/wav")
else
    for part in dev test; do
        [ ! -d "$vox1/$part/wav" ] || wav_dirs+=("$vox1/$part/wav")
    done
fi
[ ${#wav_dirs[@]} -gt 0 ] || die "$vox1 has neither wav/ nor dev/wav/ or test/wav/"

# The trial lists, all of them found before anything is written.
declare -A list_file=([O]=veri_test2.txt [E]=list_test_all2.txt [H]=list_test_hard2.txt)
declare -A list_name=([O]="VoxCeleb1-O cleaned" [E]="VoxCeleb1-E cleaned"
                      [H]="VoxCeleb1-H cleaned")
declare -A list_path=()
for t in $trials; do
    [ -n "${list_file[$t]:-}" ] || die "--trials: unknown list '$t' (the lists are O, E and H)"
    for dir in "$vox1" "$vox1/meta"; do
        if [ -f "$dir/${list_file[$t]}" ]; then
            list_path[$t]=$dir/${list_file[$t]}
            break
        fi
    done
    [ -n "${list_path[$t]:-}" ] ||
        die "trial list ${list_file[$t]} (${list_name[$t]}) is in neither $vox1/ nor" \
            "$vox1/meta/. This recipe downloads nothing: get it from $meta_url${list_file[$t]}" \
            "(the VoxCeleb site, $site_url, lists it) and put it in $vox1/meta/, or pass" \
            "--trials with the lists you have (e.g. --trials O; run.sh: VOXCELEB_TRIALS=O)"
done
[ ${#list_path[@]} -gt 0 ] || die "--trials is empty"

if [ -n "$vox2" ]; then
    [ -d "$vox2" ] || die "VoxCeleb2 directory '$vox2' does not exist (--vox2, VOXCELEB2)"
    vox2=$(abs_dir "$vox2" VoxCeleb2)
    if [ -d "$vox2/dev/aac" ]; then
        aac=$vox2/dev/aac
    elif [ -d "$vox2/aac" ]; then
        aac=$vox2/aac
    else
        die "$vox2 has neither dev/aac/ nor aac/ (VoxCeleb2 dev)"
    fi
    command -v ffmpeg > /dev/null ||
        die "ffmpeg is not on PATH: VoxCeleb2's m4a files are decoded by ffmpeg pipes in" \
            "wav.scp (soundfile cannot read m4a). Install ffmpeg, or leave VoxCeleb2 out" \
            "(no --vox2 / VOXCELEB2: no cohort, no AS-norm)"
fi

# Reads the files <...>/<spk>/<yt>/<nnnnn><ext> on stdin and writes into <tmp> one line per
# file of wav.scp ("<utt> <path>"), utt2spk and rel ("<spk>/<yt>/<nnnnn><ext>").
tables() {
    local ext=$1 tmp=$2
    awk -v me="$0" -v ext="$ext" -v dir="$tmp" '
        function fail(msg) { print me ": ERROR: " msg > "/dev/stderr"; bad = 1; exit 1 }
        {
            path = $0
            if (path ~ /[ \t]/) fail("file name with whitespace: " path)
            n = split(path, part, "/"); spk = part[n - 2]; yt = part[n - 1]
            num = substr(part[n], 1, length(part[n]) - length(ext))
            if (spk !~ /^id[0-9]+$/ || num !~ /^[0-9]+$/)
                fail("unexpected file " path " (expected id<digits>/<youtube id>/<nnnnn>" ext ")")
            utt = spk "-" yt "-" num
            print utt, path > (dir "/wav.scp")
            print utt, spk > (dir "/utt2spk")
            print spk "/" yt "/" part[n] > (dir "/rel")
        }
        END { if (bad) exit 1 }'
}

# VoxCeleb1
data=$1/vox1
mkdir -p "$data"
rm -rf "$data"/{wav.scp,utt2spk,spk2utt,text,utt2dur,segments,reco2dur,trials,.backup}
tmp=$(mktemp -d "$data/.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
for dir in "${wav_dirs[@]}"; do
    find -L "$dir" -mindepth 3 -maxdepth 3 -type f -name '*.wav'
done | sort | tables .wav "$tmp"
[ -s "$tmp/wav.scp" ] || die "no <spk>/<youtube id>/*.wav files under ${wav_dirs[*]}"
utils/finish_data_prep.sh --text false "$tmp" "$data" "${wav_dirs[*]}"

# Every path of every list must be a file of the corpus: checked now, not after the extraction.
mkdir -p "$data/trials"
for t in O E H; do
    [ -n "${list_path[$t]:-}" ] || continue
    src=${list_path[$t]}
    awk -v me="$0" -v src="$src" -v dirs="${wav_dirs[*]}" '
        NR == FNR { have[$0] = 1; next }
        { sub(/\r$/, "") }
        NF == 0 { next }
        NF != 3 || ($1 != "0" && $1 != "1") {
            printf "%s: ERROR: %s:%d: \"%s\" is not a VoxCeleb trial (1|0 <path> <path>)\n",
                me, src, FNR, $0 > "/dev/stderr"
            bad = 1; exit 1
        }
        {
            for (i = 2; i <= 3; i++)
                if (!($i in have) && !($i in seen)) { seen[$i] = 1; miss[++n] = $i }
        }
        END {
            if (bad) exit 1
            if (n) {
                printf "%s: ERROR: %d paths of %s are not files under %s; the first:", me, n,
                    src, dirs > "/dev/stderr"
                for (i = 1; i <= n && i <= 10; i++) printf " %s", miss[i] > "/dev/stderr"
                printf "\n" > "/dev/stderr"
                exit 1
            }
        }' "$tmp/rel" "$src" || exit 1
    cp "$src" "$data/trials/vox1_$t"
    echo "$0: $data/trials/vox1_$t: ${list_name[$t]} from $src ($(grep -c '^1 ' "$src" || true)" \
        "target, $(grep -c '^0 ' "$src" || true) non-target trials)"
done
rm -rf "$tmp"

# VoxCeleb2 dev: the cohort
[ -n "$vox2" ] || exit 0
data=$1/vox2_dev
mkdir -p "$data"
rm -rf "$data"/{wav.scp,utt2spk,spk2utt,text,utt2dur,segments,reco2dur,.backup}
tmp=$(mktemp -d "$data/.tmp.XXXXXX")
find -L "$aac" -mindepth 3 -maxdepth 3 -type f -name '*.m4a' | sort \
    | awk -v n="$cohort_per_speaker" '{ k = split($0, part, "/") } ++count[part[k - 2]] <= n' \
    | tables .m4a "$tmp"
[ -s "$tmp/wav.scp" ] || die "no <spk>/<youtube id>/*.m4a files under $aac"
awk '{ print $1, "ffmpeg -nostdin -loglevel error -i " $2 " -f wav -ac 1 -ar 16000 - |" }' \
    "$tmp/wav.scp" > "$tmp/pipes"
mv "$tmp/pipes" "$tmp/wav.scp"
utils/finish_data_prep.sh --text false "$tmp" "$data" \
    "$aac (the first $cohort_per_speaker recordings of each speaker)"
