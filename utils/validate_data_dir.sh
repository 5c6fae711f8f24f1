#!/usr/bin/env bash
# validate_data_dir.sh: check that a Kaldi-style data directory is consistent.
#
#   validate_data_dir.sh [--no-text] [--any-text-ids] [--no-wav] [--no-feats] [--spk-optional]
#                        [--no-spk-sort] <data-dir>
#
# Kaldi tools read these files as sorted tables and merge them by key, so an
# unsorted file or a mismatched id set gives wrong results rather than an
# error later on; this script catches that early.  The first problem found
# is reported, naming the file and the offending line or id, with what
# repairs it (utils/fix_data_dir.sh where that does, the edit to make where
# it does not), and the exit status is 1.
#
# Speakers follow Kaldi's rule: every table is sorted by utterance id, and
# spk2utt (sorted by speaker id) holds exactly the utterance-speaker pairs of
# utt2spk.  Where speaker ids are not prefixes of utterance ids, utt2spk is
# not also sorted by speaker: that is a warning (some Kaldi tools that split
# by speaker need it), not an error.
set -euo pipefail

me=validate_data_dir.sh
usage="Usage: $me [--no-text] [--any-text-ids] [--no-wav] [--no-feats] [--spk-optional]
       [--no-spk-sort] <data-dir>
Checks utt2spk, spk2utt, wav.scp, segments, text, utt2dur and feats.scp of
<data-dir> for sorting, unique ids and matching id sets.
  --no-text      do not require or check text
  --any-text-ids check text's format and encoding but not that its ids are those of
                 utt2spk (for tools that use only the utterances text names)
  --no-wav       do not require or check wav.scp
  --no-feats     do not check feats.scp (it is optional anyway)
  --spk-optional utt2spk and spk2utt may be absent (for tools that use no speakers,
                 e.g. feature extraction); the utterances are then those of segments,
                 else of wav.scp; present ones are checked
  --no-spk-sort  do not warn when utt2spk is not sorted by speaker too"

no_text=false
any_text_ids=false
no_wav=false
no_feats=false
no_spk_sort=false
spk_optional=false
while [ $# -gt 0 ]; do
  case "$1" in
    --no-text) no_text=true ;;
    --any-text-ids) any_text_ids=true ;;
    --no-wav) no_wav=true ;;
    --no-feats) no_feats=true ;;
    --no-spk-sort) no_spk_sort=true ;;
    --spk-optional) spk_optional=true ;;
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

die() { echo "$me: $*" >&2; exit 1; }

[ -d "$data" ] || die "data directory $data does not exist"

# One Perl program with several checks; each prints the problem found (if
# any) and exits 1 when utils/fix_data_dir.sh repairs it, 2 when the message
# says what to edit.  Perl string comparison is byte order, i.e. LC_ALL=C.
read_checker() {
  cat <<'PERL'
use strict;
use warnings;
my ($mode, @a) = @ARGV;
sub bad { print "$_[0]\n"; exit 1; }     # fix_data_dir.sh repairs it
sub hand { print "$_[0]\n"; exit 2; }    # the message says what to change
sub read_keys {
  my ($file) = @_;
  open(my $fh, '<', $file) or hand("cannot open $file: $!");
  my @k;
  while (<$fh>) { my ($key) = split(' '); push @k, $key if defined $key; }
  return @k;
}
if ($mode eq 'table') {
  # Field count within [min, max] (max 0: no limit), ids free of odd
  # whitespace, keys strictly increasing (sorted, no duplicates).
  my ($file, $min, $max) = @a;
  open(my $fh, '<', $file) or hand("cannot open $file: $!");
  my $prev;
  while (my $line = <$fh>) {
    bad("$file line $. does not end in a newline") unless $line =~ s/\n$//;
    bad("$file line $. contains a carriage return (DOS line ending?)") if $line =~ m/\r$/;
    hand("$file line $. contains a carriage return inside the line: remove it")
      if $line =~ m/\r/;
    bad("$file line $. is empty") if $line eq '';
    hand("$file line $. starts with whitespace (empty id?): '$line'; give it its id or "
      . "delete the line") if $line =~ m/^\s/;
    my @f = split(' ', $line);
    hand("$file line $. has " . scalar(@f) . " fields, expected "
      . ($max == $min ? $min : $max ? "$min to $max" : "at least $min") . ": '$line'; "
      . "correct or delete that line")
      if @f < $min || ($max && @f > $max);
    my $key = $f[0];
    if (defined $prev) {
      bad("$file has duplicate key '$key' (line $.)") if $key eq $prev;
      bad("$file is not sorted (LC_ALL=C): key '$key' on line $. comes after '$prev'")
        if $key lt $prev;
    }
    $prev = $key;
  }
  hand("$file is empty: write its lines, or remove it if it is optional") unless defined $prev;
} elsif ($mode eq 'samekeys') {
  # Same key sets in two (already checked) tables.
  my ($fa, $fb, $what) = @a;
  my @ka = read_keys($fa);
  my @kb = read_keys($fb);
  my %ha = map { $_ => 1 } @ka;
  my %hb = map { $_ => 1 } @kb;
  for (@ka) { bad("$what '$_' is in $fa but not in $fb") unless $hb{$_}; }
  for (@kb) { bad("$what '$_' is in $fb but not in $fa") unless $ha{$_}; }
} elsif ($mode eq 'spk2utt') {
  # spk2utt (already checked as a table) holds exactly the pairs of utt2spk,
  # each utterance once; the order of utterances within a line is free.
  my ($u2s_file, $file) = @a;
  my %spk_of;
  open(my $fh, '<', $u2s_file) or hand("cannot open $u2s_file: $!");
  while (<$fh>) { my ($utt, $spk) = split(' '); $spk_of{$utt} = $spk; }
  close $fh;
  my $what = "$file does not match $u2s_file";
  my %line_of;
  open($fh, '<', $file) or hand("cannot open $file: $!");
  while (<$fh>) {
    my ($spk, @utts) = split(' ');
    for my $utt (@utts) {
      bad("$what: utterance '$utt' (line $.) is not in $u2s_file")
        unless exists $spk_of{$utt};
      bad("$what: utterance '$utt' is under speaker '$spk' (line $.), $u2s_file says "
        . "'$spk_of{$utt}'") if $spk_of{$utt} ne $spk;
      bad("$what: utterance '$utt' is listed twice (lines $line_of{$utt} and $.)")
        if exists $line_of{$utt};
      $line_of{$utt} = $.;
    }
  }
  for my $utt (sort keys %spk_of) {
    bad("$what: utterance '$utt' (speaker '$spk_of{$utt}') is not in $file")
      unless exists $line_of{$utt};
  }
} elsif ($mode eq 'spksorted') {
  # Prints (exit 0) where utt2spk is not also sorted by speaker: sort -k2
  # order equals sort -k1 order only when speaker ids are prefixes of
  # utterance ids.  Kaldi's rule does not need it; tools that split by
  # speaker do.
  my ($file) = @a;
  open(my $fh, '<', $file) or hand("cannot open $file: $!");
  my ($pspk, $putt);
  while (<$fh>) {
    my ($utt, $spk) = split(' ');
    if (defined $pspk && $spk lt $pspk) {
      print "utterance '$utt' (speaker '$spk', line $.) comes after '$putt' (speaker '$pspk')\n";
      last;
    }
    ($pspk, $putt) = ($spk, $utt);
  }
} elsif ($mode eq 'segments') {
  my ($file, $wav) = @a;
  my %reco;
  %reco = map { $_ => 1 } read_keys($wav) if $wav ne '';
  open(my $fh, '<', $file) or hand("cannot open $file: $!");
  my $num = qr/^(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$/;
  my $edit = "correct or delete that line";
  while (<$fh>) {
    my ($utt, $r, $start, $end) = split(' ');
    hand("$file line $.: start time '$start' of '$utt' is not a non-negative number; $edit")
      unless $start =~ $num;
    hand("$file line $.: end time '$end' of '$utt' is not a non-negative number; $edit")
      unless $end =~ $num;
    hand("$file line $.: segment '$utt' has end $end <= start $start; $edit")
      unless $end > $start;
    bad("$file line $.: recording '$r' of segment '$utt' is not in $wav") if $wav ne '' && !$reco{$r};
  }
} elsif ($mode eq 'durations') {
  my ($file) = @a;
  open(my $fh, '<', $file) or hand("cannot open $file: $!");
  while (<$fh>) {
    my ($key, $d) = split(' ');
    hand("$file line $.: duration '$d' of '$key' is not a positive number; correct that line, "
      . "or remove $file (it is optional; pyscripts/get_utt2dur.py writes it again)")
      unless $d =~ m/^(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$/ && $d > 0;
  }
} elsif ($mode eq 'utf8') {
  require Encode;
  my ($file) = @a;
  open(my $fh, '<:raw', $file) or hand("cannot open $file: $!");
  while (my $line = <$fh>) {
    my $copy = $line;
    my $ok = eval { Encode::decode('UTF-8', $copy, Encode::FB_CROAK()); 1 };
    if (!$ok) {
      my ($key) = split(' ', $line);
      hand("$file line $. (utterance '$key') is not valid UTF-8; convert the file to UTF-8, "
        . "e.g. iconv -f latin1 -t utf-8 $file > $file.utf8 && mv $file.utf8 $file");
    }
  }
} else {
  hand("internal error: unknown check $mode");
}
exit 0;
PERL
}
checker=$(read_checker)
fix=utils/fix_data_dir.sh
if $spk_optional && [ ! -f "$data/utt2spk" ]; then fix="$fix --spk-optional"; fi
repair="$fix $data repairs this: it sorts the tables, keeps the first line of a duplicate id \
and only the ids present in every file, and rebuilds spk2utt"
check() {
  local msg status=0
  msg=$(perl -e "$checker" "$@") || status=$?
  case $status in
    0) ;;
    1) die "$msg; $repair" ;;
    *) die "$msg" ;;
  esac
}

# Speakers.  utt2spk, when there is one, is the list of utterances
# everything else is compared with; else segments', else wav.scp's.
utts=
if [ -f "$data/segments" ]; then own_list=segments; else own_list=wav.scp; fi
if [ -f "$data/utt2spk" ]; then
  check table "$data/utt2spk" 2 2
  utts=$data/utt2spk
  if [ -f "$data/spk2utt" ]; then
    check table "$data/spk2utt" 2 0
    check spk2utt "$data/utt2spk" "$data/spk2utt"
  elif ! $spk_optional; then
    die "$data/spk2utt does not exist: create it with" \
      "utils/utt2spk_to_spk2utt.pl $data/utt2spk | LC_ALL=C sort -k1,1 > $data/spk2utt"
  fi
  if ! $no_spk_sort; then
    where=$(perl -e "$checker" spksorted "$data/utt2spk")
    if [ -n "$where" ]; then
      echo "$me: warning: $data/utt2spk is not also sorted by speaker ($where): speaker ids" \
        "are not prefixes of utterance ids. Kaldi's rule holds (tables sorted by utterance" \
        "id, spk2utt matching utt2spk); only tools that split by speaker need more, and" \
        "they need speaker ids that prefix utterance ids (--no-spk-sort silences this)" >&2
    fi
  fi
elif ! $spk_optional; then
  die "$data/utt2spk does not exist (without speaker labels, make each utterance its own" \
    "speaker: awk '{print \$1, \$1}' $data/$own_list > $data/utt2spk)"
elif [ -f "$data/spk2utt" ]; then
  die "$data/spk2utt has no utt2spk beside it: create it with" \
    "utils/spk2utt_to_utt2spk.pl $data/spk2utt | LC_ALL=C sort -k1,1 > $data/utt2spk"
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
  if [ -n "$utts" ]; then check samekeys "$utts" "$data/segments" utterance; fi
  utts=${utts:-$data/segments}
elif ! $no_wav; then
  if [ -n "$utts" ]; then check samekeys "$utts" "$data/wav.scp" utterance; fi
  utts=${utts:-$data/wav.scp}
fi
if [ -z "$utts" ]; then
  die "$data has no utt2spk or segments, and wav.scp is not checked (--no-wav): no list of" \
    "utterances to check the other files against"
fi

# Transcripts.
if ! $no_text; then
  [ -f "$data/text" ] || die "$data/text does not exist (use --no-text if there is none)"
  check table "$data/text" 1 0
  $any_text_ids || check samekeys "$utts" "$data/text" utterance
  check utf8 "$data/text"
fi

# Optional per-utterance files.
if [ -f "$data/utt2dur" ]; then
  check table "$data/utt2dur" 2 2
  check samekeys "$utts" "$data/utt2dur" utterance
  check durations "$data/utt2dur"
fi
if ! $no_feats && [ -f "$data/feats.scp" ]; then
  check table "$data/feats.scp" 2 0
  check samekeys "$utts" "$data/feats.scp" utterance
fi

echo "$me: Successfully validated data-directory $data"
