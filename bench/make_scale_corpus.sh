#!/usr/bin/env bash
# Builds a Kaldi data dir of N utterances cut from the real recordings of samples/real_speech,
# for scale benchmarks: segments of 0.5-12 s (at most the recording's length) at random
# positions, spread over N/50 speaker ids, each drawn from the recordings of one real speaker.
# Writes wav.scp (the recordings), segments, utt2spk, spk2utt, utt2dur and text (the words of
# the recording's transcript that fall, in proportion, inside the segment: an approximation,
# empty for the recordings without a transcript; text here names the utterances to extract).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

seed=1
help_message="Usage: $0 [--seed <$seed>] <num_utts> [<data_dir>]
<data_dir> defaults to bench/data/scale_<num_utts>."

. "$root/utils/parse_options.sh"
if [ $# -lt 1 ] || [ $# -gt 2 ] || ! [[ $1 =~ ^[1-9][0-9]*$ ]]; then
    echo "$help_message" >&2
    exit 1
fi
num_utts=$1
dir=${2:-$root/bench/data/scale_$num_utts}
corpus=$root/samples/real_speech

mkdir -p "$dir"
# One line per recording: id, absolute path, duration, speaker, transcript (if any).
join -j 1 <(LC_ALL=C sort "$corpus/wav.scp") <(LC_ALL=C sort "$corpus/utt2dur") \
    | join -j 1 - <(LC_ALL=C sort "$corpus/utt2spk") \
    | join -j 1 -a 1 - <(LC_ALL=C sort "$corpus/text") \
    | awk -v corpus="$corpus" '{ $2 = corpus "/" $2; print }' > "$dir/.recordings"

awk -v n="$num_utts" -v seed="$seed" -v dir="$dir" '
    { rec[NR] = $1; path[NR] = $2; dur[NR] = $3; spk[NR] = $4
      words[NR] = ""; for (i = 5; i <= NF; i++) words[NR] = words[NR] " " $i }
    END {
        srand(seed)
        num_recs = NR
        # About 50 utterances per speaker id, spread over the real speakers.
        per_real = int(n / 50 / 13) + 1
        for (r = 1; r <= num_recs; r++) printf "%s %s\n", rec[r], path[r] > (dir "/wav.scp")
        for (u = 1; u <= n; u++) {
            r = int(rand() * num_recs) + 1
            longest = dur[r] < 12 ? dur[r] : 12
            len = 0.5 + rand() * (longest - 0.5)
            start = rand() * (dur[r] - len)
            start = int(start * 100) / 100; end = int((start + len) * 100) / 100
            speaker = sprintf("%s-%04d", spk[r], int(rand() * per_real))
            utt = sprintf("%s-%07d", speaker, u)
            printf "%s %s %.2f %.2f\n", utt, rec[r], start, end > (dir "/segments.unsorted")
            printf "%s %s\n", utt, speaker > (dir "/utt2spk.unsorted")
            printf "%s %.2f\n", utt, end - start > (dir "/utt2dur.unsorted")
            num_words = split(words[r], w, " ")
            first = int(start / dur[r] * num_words) + 1
            last = int(end / dur[r] * num_words)
            if (last < first) last = first
            if (num_words == 0) last = 0
            line = utt
            for (i = first; i <= last; i++) line = line " " w[i]
            print line > (dir "/text.unsorted")
        }
    }' "$dir/.recordings"

for f in segments utt2spk utt2dur text; do
    LC_ALL=C sort "$dir/$f.unsorted" > "$dir/$f"
    rm "$dir/$f.unsorted"
done
LC_ALL=C sort -o "$dir/wav.scp" "$dir/wav.scp"
rm "$dir/.recordings"
"$root/utils/utt2spk_to_spk2utt.pl" "$dir/utt2spk" > "$dir/spk2utt"
"$root/utils/validate_data_dir.sh" --no-feats "$dir" >/dev/null
awk -v dir="$dir" '{ s += $2 } END {
    printf "%s: %d utterances, %.1f h of audio\n", dir, NR, s / 3600 }' "$dir/utt2dur"
echo "$(wc -l < "$dir/spk2utt") speakers, $(wc -l < "$dir/wav.scp") recordings"
