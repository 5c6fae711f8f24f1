#!/usr/bin/env bash
# The shipped real speech (samples/real_speech) packed into the formats corpora ship as, each
# with its own writer, imported where it lies (pyscripts/import_corpus.py) and embedded: every
# format's output equals the plain wav.scp run's bit for bit (same ids, same vectors).
set -euo pipefail

# log() and check_stages(), shared with the recipe templates.
# shellcheck source=../../TEMPLATE/data_stages.sh
. "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/../../TEMPLATE/data_stages.sh"
SECONDS=0

stage=1              # first stage to run (1 to 5)
stop_stage=100       # last stage to run (past 5: to the end)
nj=2                 # extraction jobs per data dir
formats="wds_tar wds_tgz parquet hf_arrow shar nemo"
per_shard=4          # utterances per tar shard, parquet row group, arrow record batch
datadir=data         # data/plain, data/<format>
packdir=             # the packed corpora, <packdir>/<format>; default <datadir>/packed
dumpdir=dump         # <dumpdir>/<tag>/plain, <dumpdir>/<tag>/<format>
toolkit=resemblyzer
model=
device=cpu
tag=
extract_opts=        # more options for scripts/extract_spk_embed.sh

help_message="Usage: $0 [options]
Stages:
  1: plain data dir <datadir>/plain (local/data.sh) and its speaker embeddings
     <dumpdir>/<tag>/plain/<tag>.scp and spk_<tag>.scp
  2: pack <datadir>/plain into each format: <packdir>/<format> (local/pack.py)
  3: import each format where it lies: <datadir>/<format> (pyscripts/import_corpus.py)
  4: speaker embeddings of each: <dumpdir>/<tag>/<format>
  5: compare each format's outputs with the plain run's, bit for bit (local/compare.py)
Formats (--formats, any of): wds_tar wds_tgz parquet hf_arrow shar nemo
Options:
  --stage <$stage> --stop_stage <$stop_stage> --nj <$nj> --formats <\"$formats\">
  --per_shard <$per_shard> --datadir <$datadir> --packdir <<datadir>/packed>
  --dumpdir <$dumpdir> --toolkit <$toolkit> --model <path> --device <$device> --tag <name>
  --extract_opts <opts>"

. ./path.sh
# shellcheck source=/dev/null  # the recipe's own cmd.sh: it sets extract_cmd
. ./cmd.sh
. utils/parse_options.sh
if [ $# -ne 0 ]; then
    echo "$help_message" >&2
    exit 1
fi
check_stages 5
packdir=${packdir:-$datadir/packed}
tag=${tag:-$toolkit}
plain=$dumpdir/$tag/plain

# The import_corpus.py format of each packed format.
importer() {
    case $1 in
        wds_tar|wds_tgz) echo webdataset ;;
        parquet|hf_arrow) echo hf ;;
        shar|nemo) echo "$1" ;;
        *) return 1 ;;
    esac
}
[ -n "$formats" ] || { log "ERROR: --formats is empty" >&2; exit 1; }
for fmt in $formats; do
    if ! importer "$fmt" >/dev/null; then
        log "ERROR: --formats: unknown format '$fmt' (--help lists them)" >&2
        exit 1
    fi
done

# Exits unless each file given is there, naming the stage that writes it.
need() {
    local writer=$1 f
    shift
    for f in "$@"; do
        if [ ! -e "$f" ]; then
            log "ERROR: $f is missing: run stage $writer first (./run.sh --stage $writer, with" \
                "the same --datadir, --packdir, --dumpdir and --tag)" >&2
            exit 1
        fi
    done
}

extract() {
    log "speaker embeddings of $1 with $toolkit -> $2"
    # shellcheck disable=SC2086,SC2154  # opts split on purpose; extract_cmd: from cmd.sh
    scripts/extract_spk_embed.sh --config conf/spk_embed.conf --cmd "$extract_cmd" \
        --nj "$nj" --toolkit "$toolkit" --model "$model" --device "$device" --tag "$tag" \
        $extract_opts "$1" "$2"
}

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
    log "stage 1: plain data dir and its speaker embeddings"
    local/data.sh "$datadir"
    utils/validate_data_dir.sh --no-feats --no-text "$datadir/plain"
    extract "$datadir/plain" "$plain"
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
    log "stage 2: packing $datadir/plain into $formats -> $packdir"
    need 1 "$datadir/plain/wav.scp"
    python3 local/pack.py --formats "$formats" --per_shard "$per_shard" "$datadir/plain" \
        "$packdir"
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
    for fmt in $formats; do
        log "stage 3: importing $packdir/$fmt ($(importer "$fmt")) -> $datadir/$fmt"
        need 2 "$packdir/$fmt"
        rm -rf "${datadir:?}/$fmt"   # no table of an earlier import stays
        # The source as an absolute path (the entries are absolute either way): given a relative
        # folder, --format nemo reads both tarred_audio_manifest.json and sharded_manifests/.
        python3 pyscripts/import_corpus.py --format "$(importer "$fmt")" \
            "$(readlink -f "$packdir/$fmt")" "$datadir/$fmt"
        utils/validate_data_dir.sh --no-feats --no-text --no-spk-sort "$datadir/$fmt" >/dev/null
        if ! cmp -s "$datadir/plain/utt2spk" "$datadir/$fmt/utt2spk"; then
            log "ERROR: $datadir/$fmt/utt2spk differs from $datadir/plain/utt2spk: the import" \
                "does not give the plain run's ids and speakers:" >&2
            diff "$datadir/plain/utt2spk" "$datadir/$fmt/utt2spk" | head -n 10 >&2 || true
            exit 1
        fi
    done
fi

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
    for fmt in $formats; do
        log "stage 4: $fmt"
        need 3 "$datadir/$fmt/wav.scp"
        extract "$datadir/$fmt" "$dumpdir/$tag/$fmt"
    done
fi

if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ]; then
    log "stage 5: each format's outputs against the plain run's ($plain), bit for bit"
    need 1 "$plain/$tag.scp" "$plain/spk_$tag.scp"
    differ=()
    for fmt in $formats; do
        out=$dumpdir/$tag/$fmt
        need 4 "$out/$tag.scp" "$out/spk_$tag.scp"
        python3 local/compare.py --name "$fmt" --reference "the plain run" \
            "$plain/$tag.scp" "$out/$tag.scp" \
            "$plain/spk_$tag.scp" "$out/spk_$tag.scp" || differ+=("$fmt")
    done
    if [ ${#differ[@]} -ne 0 ]; then
        log "ERROR: ${#differ[@]} format(s) differ from the plain run: ${differ[*]}" \
            "(the lines above say where)" >&2
        exit 1
    fi
    log "all $(wc -w <<< "$formats") formats equal the plain run bit for bit"
fi
log "finished in ${SECONDS} s"
