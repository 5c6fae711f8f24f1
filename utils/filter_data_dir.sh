#!/usr/bin/env bash
# filter_data_dir.sh: a subset of a Kaldi data dir by the quality tables of
# scripts/compute_quality.sh, listing each dropped utterance and why.
set -euo pipefail

me=filter_data_dir.sh
quality_dir=
min_speech_ratio=
min_snr_db=
max_clip_ratio=
min_level_dbfs=
min_dur=
max_dur=

usage="Usage: $me --quality_dir <dir> [criteria] <data_dir> <out_data_dir>
Keeps the utterances of <data_dir> (its utt2spk) that meet every criterion given, reading
<quality_dir>/utt2<measure> (scripts/compute_quality.sh <data_dir> <quality_dir>):
  --min_speech_ratio R   utt2speech_ratio >= R     --min_snr_db D    utt2snr_db >= D
  --max_clip_ratio R     utt2clip_ratio <= R       --min_level_dbfs L  utt2level_dbfs >= L
  --min_dur S            utt2dur >= S              --max_dur S       utt2dur <= S
Writes <out_data_dir>: every per-utterance file (utt2spk text utt2dur segments feats.scp
utt2num_frames utt2lang utt2gender utt2uniq) filtered, spk2utt rebuilt, spk2gender and
cmvn.scp of the speakers kept, wav.scp, reco2dur and reco2file_and_channel of the recordings
kept; and <out_data_dir>/dropped: '<utt> <reason>[,<reason>...]' per dropped utterance, each
reason '<measure>=<value><op-failed><limit>' (e.g. snr_db=7.31<10)."

while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h) echo "$usage" >&2; exit 0 ;;
    --quality_dir|--min_speech_ratio|--min_snr_db|--max_clip_ratio|--min_level_dbfs|--min_dur|--max_dur)
      [ $# -ge 2 ] || { echo "$me: $1 needs a value" >&2; exit 1; }
      printf -v "${1#--}" '%s' "$2"; shift 2 ;;
    --*) echo "$me: unknown option $1" >&2; echo "$usage" >&2; exit 1 ;;
    *) break ;;
  esac
done
if [ $# -ne 2 ] || [ -z "$quality_dir" ]; then
  echo "$usage" >&2
  exit 1
fi
data=${1%/}
out=${2%/}
[ -f "$data/utt2spk" ] || { echo "$me: $data/utt2spk does not exist" >&2; exit 1; }
[ -d "$quality_dir" ] || { echo "$me: --quality_dir $quality_dir does not exist" >&2; exit 1; }
if [ "$(realpath -m "$out")" = "$(realpath -m "$data")" ]; then
  echo "$me: the output $out is the input data dir" >&2
  exit 1
fi

# criterion: "<measure> <ge|le> <limit>" for each option given
criteria=()
add() {  # add <option value> <measure> <ge|le> <option name>
  [ -n "$1" ] || return 0
  if ! [[ "$1" =~ ^-?[0-9]+([.][0-9]+)?([eE][-+]?[0-9]+)?$ ]]; then
    echo "$me: --$4 '$1' is not a number" >&2
    exit 1
  fi
  local table=$quality_dir/utt2$2
  if [ ! -f "$table" ]; then
    echo "$me: --$4 needs $table, which does not exist (made by scripts/compute_quality.sh)" >&2
    exit 1
  fi
  criteria+=("$2 $3 $1")
}
add "$min_speech_ratio" speech_ratio ge min_speech_ratio
add "$min_snr_db" snr_db ge min_snr_db
add "$max_clip_ratio" clip_ratio le max_clip_ratio
add "$min_level_dbfs" level_dbfs ge min_level_dbfs
add "$min_dur" dur ge min_dur
add "$max_dur" dur le max_dur
if [ ${#criteria[@]} -eq 0 ]; then
  echo "$me: no criterion given (--min_speech_ratio, --min_snr_db, --max_clip_ratio," \
    "--min_level_dbfs, --min_dur, --max_dur)" >&2
  exit 1
fi

mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# <utt> <reason>... for each failing criterion; an utterance missing from a table is an error.
: > "$tmp/reasons"
for c in "${criteria[@]}"; do
  read -r measure op limit <<< "$c"
  awk -v measure="$measure" -v op="$op" -v limit="$limit" -v table="$quality_dir/utt2$measure" \
      -v me="$me" '
    FNR == NR { value[$1] = $2; next }
    !($1 in value) { print me ": " table " has no line for utterance " $1 \
                       " (were the tables made for this data dir?)" > "/dev/stderr"; bad = 1; exit 1 }
    {
      v = value[$1] + 0
      if (op == "ge" && v < limit + 0) print $1, measure "=" value[$1] "<" limit
      if (op == "le" && v > limit + 0) print $1, measure "=" value[$1] ">" limit
    }
    END { if (bad) exit 1 }' "$quality_dir/utt2$measure" "$data/utt2spk" >> "$tmp/reasons"
done
# One line per dropped utterance, reasons joined by commas, in utt2spk order.
awk 'FNR == NR { if ($1 in r) r[$1] = r[$1] "," $2; else r[$1] = $2; next }
     ($1 in r) { print $1, r[$1] }' "$tmp/reasons" "$data/utt2spk" > "$out/dropped"
awk 'FNR == NR { drop[$1] = 1; next } !($1 in drop) { print $1 }' \
  "$out/dropped" "$data/utt2spk" > "$tmp/keep"

rm -f "$out"/{wav.scp,segments,text,utt2spk,spk2utt,utt2dur,feats.scp,utt2num_frames} \
  "$out"/{utt2lang,utt2gender,utt2uniq,spk2gender,cmvn.scp,reco2dur,reco2file_and_channel}
keep_lines() {  # keep_lines <ids> <file> <out>: lines of <file> whose first field is in <ids>
  awk 'FNR == NR { k[$1] = 1; next } ($1 in k)' "$1" "$2" > "$3"
}
for f in utt2spk text utt2dur segments feats.scp utt2num_frames utt2lang utt2gender utt2uniq; do
  [ -f "$data/$f" ] && keep_lines "$tmp/keep" "$data/$f" "$out/$f"
done
awk '{ print $2 }' "$out/utt2spk" | LC_ALL=C sort -u > "$tmp/speakers"
for f in spk2gender cmvn.scp; do
  [ -f "$data/$f" ] && keep_lines "$tmp/speakers" "$data/$f" "$out/$f"
done
awk '{ s = $2; if (s in u) u[s] = u[s] " " $1; else { order[n++] = s; u[s] = $1 } }
     END { for (i = 0; i < n; i++) print order[i], u[order[i]] }' "$out/utt2spk" |
  LC_ALL=C sort > "$out/spk2utt"
if [ -f "$data/segments" ]; then
  awk '{ print $2 }' "$out/segments" | LC_ALL=C sort -u > "$tmp/recordings"
else
  cp "$tmp/keep" "$tmp/recordings"
fi
for f in wav.scp reco2dur reco2file_and_channel; do
  [ -f "$data/$f" ] && keep_lines "$tmp/recordings" "$data/$f" "$out/$f"
done
kept=$(wc -l < "$tmp/keep")
dropped=$(wc -l < "$out/dropped")
echo "$me: kept $kept of $((kept + dropped)) utterances in $out; dropped $dropped" \
  "(listed with reasons in $out/dropped)"
for c in "${criteria[@]}"; do
  read -r measure op limit <<< "$c"
  n=$(grep -c "[ ,]$measure=" "$out/dropped" || true)
  echo "$me:   $measure $([ "$op" = ge ] && echo ">=" || echo "<=") $limit: $n failed"
done
