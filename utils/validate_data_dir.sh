#!/usr/bin/env bash
# validate_data_dir.sh: check that a Kaldi-style data directory is consistent.
#
#   validate_data_dir.sh [--no-text] [--any-text-ids] [--no-wav] [--no-feats] [--no-spk-sort] <data-dir>
#
# Kaldi tools read these files as sorted tables and merge them by key, so an
# unsorted file or a mismatched id set gives wrong results rather than an
# error later on; this script catches that early.  The first problem found
# is reported, naming the file and the offending line or id, and the exit
# status is 1.
set -euo pipefail

me=validate_data_dir.sh
usage="Usage: $me [--no-text] [--any-text-ids] [--no-wav] [--no-feats] [--no-spk-sort] <data-dir>
Checks utt2spk, spk2utt, wav.scp, segments, text, utt2dur and feats.scp of
<data-dir> for sorting, unique ids and matching id sets.
  --no-text      do not require or check text
  --any-text-ids check text's format and encoding but not that its ids are those of
                 utt2spk (for tools that use only the utterances text names)
  --no-wav       do not require or check wav.scp
  --no-feats     do not check feats.scp (it is optional anyway)
  --no-spk-sort  do not require utt2spk to be sorted by speaker too"

no_text=false
any_text_ids=false
no_wav=false
no_feats=false
no_spk_sort=false
while [ $# -gt 0 ]; do
  case "$1" in
    --no-text) no_text=true ;;
    --any-text-ids) any_text_ids=true ;;
    --no-wav) no_wav=true ;;
    --no-feats) no_feats=true ;;
    --no-spk-sort) no_spk_sort=true ;;
    --help | -h) echo "$usage" >&2; exit 0 ;;
    -*) echo "$me: unknown option $1" >&2; echo "$usage" >&2; exit 1 ;;
    *) break ;;
  esac
  shift
done
if [ $# -ne 1 ]; then
  echo "$usage" >&2
  exit 1
fi
data=${1%/}
utils=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

die() { echo "$me: $*" >&2; exit 1; }

[ -d "$data" ] || die "data directory $data does not exist"

# One Perl program with several checks; each prints the problem found (if
# any) and exits 1.  Perl string comparison is byte order, i.e. LC_ALL=C.
read_checker() {
  cat <<'PERL'
use strict;
use warnings;
my ($mode, @a) = @ARGV;
sub bad { print "$_[0]\n"; exit 1; }
sub read_keys {
  my ($file) = @_;
  open(my $fh, '<', $file) or bad("cannot open $file: $!");
  my @k;
  while (<$fh>) { my ($key) = split(' '); push @k, $key if defined $key; }
  return @k;
}
if ($mode eq 'table') {
  # Field count within [min, max] (max 0: no limit), ids free of odd
  # whitespace, keys strictly increasing (sorted, no duplicates).
  my ($file, $min, $max) = @a;
  open(my $fh, '<', $file) or bad("cannot open $file: $!");
  my $prev;
  while (my $line = <$fh>) {
    bad("$file line $. does not end in a newline") unless $line =~ s/\n$//;
    bad("$file line $. contains a carriage return (DOS line ending?)") if $line =~ m/\r/;
    bad("$file line $. is empty") if $line eq '';
    bad("$file line $. starts with whitespace (empty id?): '$line'") if $line =~ m/^\s/;
    my @f = split(' ', $line);
    bad("$file line $. has " . scalar(@f) . " fields, expected "
      . ($max == $min ? $min : $max ? "$min to $max" : "at least $min") . ": '$line'")
      if @f < $min || ($max && @f > $max);
    my $key = $f[0];
    if (defined $prev) {
      bad("$file has duplicate key '$key' (line $.)") if $key eq $prev;
      bad("$file is not sorted (LC_ALL=C): key '$key' on line $. comes after '$prev'")
        if $key lt $prev;
    }
    $prev = $key;
  }
  bad("$file is empty") unless defined $prev;
} elsif ($mode eq 'samekeys') {
  # Same key sets in two (already checked) tables.
  my ($fa, $fb, $what) = @a;
  my @ka = read_keys($fa);
  my @kb = read_keys($fb);
  my %ha = map { $_ => 1 } @ka;
  my %hb = map { $_ => 1 } @kb;
  for (@ka) { bad("$what '$_' is in $fa but not in $fb") unless $hb{$_}; }
  for (@kb) { bad("$what '$_' is in $fb but not in $fa") unless $ha{$_}; }
} elsif ($mode eq 'spksorted') {
  # utt2spk must also be sorted by speaker: sort -k2 order equals sort -k1
  # order, which holds when speaker ids are prefixes of utterance ids.
  my ($file) = @a;
  open(my $fh, '<', $file) or bad("cannot open $file: $!");
  my ($pspk, $putt);
  while (<$fh>) {
    my ($utt, $spk) = split(' ');
    bad("$file is not sorted by speaker: utterance '$utt' (speaker '$spk', line $.) comes after "
      . "'$putt' (speaker '$pspk'); make speaker ids prefixes of utterance ids, "
      . "or pass --no-spk-sort") if defined $pspk && $spk lt $pspk;
    ($pspk, $putt) = ($spk, $utt);
  }
} elsif ($mode eq 'segments') {
  my ($file, $wav) = @a;
  my %reco;
  %reco = map { $_ => 1 } read_keys($wav) if $wav ne '';
  open(my $fh, '<', $file) or bad("cannot open $file: $!");
  my $num = qr/^(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$/;
  while (<$fh>) {
    my ($utt, $r, $start, $end) = split(' ');
    bad("$file line $.: start time '$start' of '$utt' is not a non-negative number") unless $start =~ $num;
    bad("$file line $.: end time '$end' of '$utt' is not a non-negative number") unless $end =~ $num;
    bad("$file line $.: segment '$utt' has end $end <= start $start") unless $end > $start;
    bad("$file line $.: recording '$r' of segment '$utt' is not in $wav") if $wav ne '' && !$reco{$r};
  }
} elsif ($mode eq 'durations') {
  my ($file) = @a;
  open(my $fh, '<', $file) or bad("cannot open $file: $!");
  while (<$fh>) {
    my ($key, $d) = split(' ');
    bad("$file line $.: duration '$d' of '$key' is not a positive number")
      unless $d =~ m/^(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$/ && $d > 0;
  }
} elsif ($mode eq 'utf8') {
  require Encode;
  my ($file) = @a;
  open(my $fh, '<:raw', $file) or bad("cannot open $file: $!");
  while (my $line = <$fh>) {
    my $copy = $line;
    my $ok = eval { Encode::decode('UTF-8', $copy, Encode::FB_CROAK()); 1 };
    if (!$ok) {
      my ($key) = split(' ', $line);
      bad("$file line $. (utterance '$key') is not valid UTF-8");
    }
  }
} else {
  bad("internal error: unknown check $mode");
}
exit 0;
PERL
}
checker=$(read_checker)
check() {
  local msg
  if ! msg=$(perl -e "$checker" "$@"); then
    die "$msg"
  fi
}

# utt2spk: the list of utterances everything else is compared with.
[ -f "$data/utt2spk" ] || die "$data/utt2spk does not exist"
check table "$data/utt2spk" 2 2

# spk2utt must be exactly what utt2spk implies.
[ -f "$data/spk2utt" ] || die "$data/spk2utt does not exist (create it with utils/utt2spk_to_spk2utt.pl $data/utt2spk)"
expected=$("$utils/utt2spk_to_spk2utt.pl" "$data/utt2spk")
actual=$(cat "$data/spk2utt")
if $no_spk_sort; then
  # Speaker order is then free; compare the set of lines.
  expected=$(printf '%s\n' "$expected" | LC_ALL=C sort)
  actual=$(printf '%s\n' "$actual" | LC_ALL=C sort)
fi
if [ "$expected" != "$actual" ]; then
  first=$(diff <(printf '%s\n' "$expected") <(printf '%s\n' "$actual") | grep -m1 '^[<>]' || true)
  die "$data/spk2utt does not match $data/utt2spk (fix with utils/fix_data_dir.sh); first difference: $first"
fi
if ! $no_spk_sort; then
  check spksorted "$data/utt2spk"
  check table "$data/spk2utt" 2 0
fi

# Recordings and, if present, segments.
if ! $no_wav; then
  [ -f "$data/wav.scp" ] || die "$data/wav.scp does not exist (use --no-wav if there is none)"
  check table "$data/wav.scp" 2 0
fi
if [ -f "$data/segments" ]; then
  check table "$data/segments" 4 4
  if $no_wav; then
    check segments "$data/segments" ""
  else
    check segments "$data/segments" "$data/wav.scp"
  fi
  check samekeys "$data/utt2spk" "$data/segments" utterance
elif ! $no_wav; then
  check samekeys "$data/utt2spk" "$data/wav.scp" utterance
fi

# Transcripts.
if ! $no_text; then
  [ -f "$data/text" ] || die "$data/text does not exist (use --no-text if there is none)"
  check table "$data/text" 1 0
  $any_text_ids || check samekeys "$data/utt2spk" "$data/text" utterance
  check utf8 "$data/text"
fi

# Optional per-utterance files.
if [ -f "$data/utt2dur" ]; then
  check table "$data/utt2dur" 2 2
  check samekeys "$data/utt2spk" "$data/utt2dur" utterance
  check durations "$data/utt2dur"
fi
if ! $no_feats && [ -f "$data/feats.scp" ]; then
  check table "$data/feats.scp" 2 0
  check samekeys "$data/utt2spk" "$data/feats.scp" utterance
fi

echo "$me: Successfully validated data-directory $data"
