#!/usr/bin/env bash
# Speaker embeddings of VCTK (0.92 or 0.80 layout, see local/data.sh): one set, "all".
# Edit corpus= below or pass --corpus <dir> (and --mic mic1|mic2, 0.92 only); every other option
# goes to spk.sh, e.g. ./run.sh --corpus /data/VCTK-Corpus-0.92 --nj 8 --device cuda
# --fix_data false: recordings without a transcript (all of p315, a few others) stay in the data
# dir for stage 3 to skip and list in <dumpdir>/<tag>/all/dropped_utts.
set -euo pipefail

corpus=/path/to/VCTK-Corpus-0.92
mic=mic1

opts=() stage=1 help=false
while [ $# -gt 0 ]; do  # takes --corpus and --mic; passes the rest (options with their values) on
    case $1 in
        --corpus=* | --mic=*) v=${1#--}; printf -v "${v%%=*}" '%s' "${1#*=}"; shift; continue ;;
        --corpus | --mic) [ $# -ge 2 ] || { echo "$0: $1 needs a value" >&2; exit 1; }
            printf -v "${1#--}" '%s' "$2"; shift 2; continue ;;
        --stage=*) stage=${1#*=} ;;
        --stage) stage=${2:-} ;;
        -h | --help) help=true ;;
    esac
    case $1 in
        --*=* | -h | --help | [!-]*) opts+=("$1"); shift ;;
        *) opts+=("$1"); [ $# -lt 2 ] || { opts+=("$2"); shift; }; shift ;;
    esac
done
if ! $help && [ "$stage" -le 1 ] 2>/dev/null && [ ! -d "$corpus" ]; then
    echo "$0: VCTK corpus directory '$corpus' does not exist:" \
        "set corpus= in $0 or pass --corpus <dir>" >&2
    exit 1
fi

./spk.sh --sets all --fix_data false --local_data_opts "--corpus $corpus --mic $mic" \
    ${opts[@]+"${opts[@]}"}
