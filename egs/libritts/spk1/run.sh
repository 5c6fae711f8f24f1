#!/usr/bin/env bash
# Speaker embeddings of LibriTTS or LibriTTS-R subsets (see local/data.sh): one set per subset,
# dev-clean -> dev_clean. Edit corpus= below or pass --corpus <dir> (LibriTTS/, LibriTTS_R/ or the
# directory holding it), --subsets "<subset> ..." and --text_kind normalized|original; every other
# option goes to spk.sh, e.g. ./run.sh --corpus /data/LibriTTS_R --subsets train-clean-100 --nj 8
# --fix_data false: a recording without its text file stays in the data dir for stage 3 to skip
# and list in <dumpdir>/<tag>/<set>/dropped_utts.
set -euo pipefail

corpus=/path/to/LibriTTS
subsets="dev-clean test-clean"
text_kind=normalized

opts=() stage=1 help=false
while [ $# -gt 0 ]; do  # takes --corpus, --subsets, --text_kind; passes the rest (with values) on
    case $1 in
        --corpus=* | --subsets=* | --text_kind=*)
            v=${1#--}; printf -v "${v%%=*}" '%s' "${1#*=}"; shift; continue ;;
        --corpus | --subsets | --text_kind)
            [ $# -ge 2 ] || { echo "$0: $1 needs a value" >&2; exit 1; }
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
    echo "$0: LibriTTS directory '$corpus' does not exist:" \
        "set corpus= in $0 or pass --corpus <dir>" >&2
    exit 1
fi
# shellcheck disable=SC2086  # a word list; joined with commas in --local_data_opts (word-split)
subsets=$(echo ${subsets//,/ })

./spk.sh --sets "$(echo "$subsets" | tr - _)" --fix_data false \
    --local_data_opts "--corpus $corpus --subsets ${subsets// /,} --text_kind $text_kind" \
    ${opts[@]+"${opts[@]}"}
