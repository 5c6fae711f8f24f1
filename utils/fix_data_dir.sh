#!/usr/bin/env bash
# fix_data_dir.sh: make a Kaldi-style data directory consistent.
#
#   fix_data_dir.sh [--spk-optional] <data-dir>
#
# Sorts every table by key (LC_ALL=C byte order), drops duplicate keys
# (keeping the first), keeps only the utterances present in all of the
# per-utterance files, drops recordings no segment uses, rebuilds spk2utt
# (sorted by speaker) and drops spk2gender entries of speakers that
# vanished.  With --spk-optional, a data dir without utt2spk (one for tools
# that use no speakers) is fixed the same way, its utterances being those of
# segments, else of wav.scp.  The original files are copied to
# <data-dir>/.backup/ first.
set -euo pipefail

me=fix_data_dir.sh
spk_optional=false
if [ "${1:-}" = --spk-optional ]; then
  spk_optional=true
  shift
fi
if [ $# -ne 1 ] || [[ "$1" == -* ]]; then
  cat >&2 <<EOF
Usage: $me [--spk-optional] <data-dir>
Sorts and de-duplicates the tables of <data-dir> (wav.scp segments text
utt2spk spk2utt utt2dur feats.scp spk2gender reco2dur utt2num_frames), keeps
only utterances present in all of them and rebuilds spk2utt.  Originals are
kept in <data-dir>/.backup/.
  --spk-optional  a data dir without utt2spk (for tools that use no speakers)
                  is fixed too: its utterances are those of segments, else of
                  wav.scp
EOF
  exit 1
fi
data=${1%/}

[ -d "$data" ] || { echo "$me: data directory $data does not exist" >&2; exit 1; }
if [ ! -f "$data/utt2spk" ]; then
  if [ -f "$data/spk2utt" ]; then
    echo "$me: $data/utt2spk does not exist (from a spk2utt, create it with utils/spk2utt_to_utt2spk.pl $data/spk2utt | LC_ALL=C sort)" >&2
    exit 1
  elif ! $spk_optional; then
    echo "$me: $data/utt2spk does not exist (for a data dir without speakers, use" \
      "$me --spk-optional $data)" >&2
    exit 1
  elif [ ! -f "$data/segments" ] && [ ! -f "$data/wav.scp" ]; then
    echo "$me: $data has none of utt2spk, segments and wav.scp: no utterances to keep" >&2
    exit 1
  fi
fi

files="wav.scp segments text utt2spk spk2utt utt2dur feats.scp spk2gender reco2dur utt2num_frames"
mkdir -p "$data/.backup"
for f in $files; do
  if [ -f "$data/$f" ]; then
    cp "$data/$f" "$data/.backup/$f" || { echo "$me: cannot back up $data/$f" >&2; exit 1; }
  fi
done

# The work is done in Perl: all tables are small enough to hold in memory,
# and Perl's default string order is byte order, i.e. LC_ALL=C.
perl - "$data" <<'PERL'
use strict;
use warnings;
my $me = 'fix_data_dir.sh';
my ($data) = @ARGV;
sub fail { print STDERR "$me: $_[0]\n"; exit 1; }

# Reads a table: returns (sorted keys, key => line), first occurrence wins.
sub read_table {
  my ($name, $min_fields) = @_;
  my $file = "$data/$name";
  open(my $fh, '<', $file) or fail("cannot open $file: $!");
  my (%line, $dups);
  while (my $l = <$fh>) {
    $l =~ s/\r?\n$//;
    my @f = split(' ', $l);
    next unless @f;    # blank lines carry nothing
    fail("$file line $. has " . scalar(@f) . " fields, expected at least $min_fields: '$l'")
      if @f < $min_fields;
    if (exists $line{ $f[0] }) { $dups++; next; }
    $line{ $f[0] } = $l;
  }
  close $fh;
  print STDERR "$me: removed $dups duplicate key(s) from $file\n" if $dups;
  return { file => $file, line => \%line };
}
sub write_table {
  my ($t, $keep) = @_;    # $keep: key => 1 filter, or undef for all
  my $tmp = "$t->{file}.tmp.$$";
  open(my $fh, '>', $tmp) or fail("cannot write $tmp: $!");
  for my $k (sort keys %{ $t->{line} }) {
    next if $keep && !$keep->{$k};
    print $fh "$t->{line}{$k}\n" or fail("error writing $tmp: $!");
  }
  close $fh or fail("error writing $tmp: $!");
  rename($tmp, $t->{file}) or fail("cannot replace $t->{file}: $!");
}
sub present { return -f "$data/$_[0]"; }

my %min_fields = (
  'utt2spk' => 2, 'text' => 1, 'segments' => 4, 'wav.scp' => 2, 'utt2dur' => 2,
  'feats.scp' => 2, 'utt2num_frames' => 2, 'reco2dur' => 2, 'spk2gender' => 2);
my %t;
for my $name (keys %min_fields) {
  $t{$name} = read_table($name, $min_fields{$name}) if present($name);
}
fail("$data/segments has no wav.scp to go with it") if $t{segments} && !$t{'wav.scp'};

# Utterances must be in utt2spk (else in segments, else in wav.scp) and every
# other per-utterance file.
my @utt_files = grep { $t{$_} } ('text', 'utt2dur', 'feats.scp', 'utt2num_frames');
push @utt_files, $t{segments} ? 'segments' : $t{'wav.scp'} ? 'wav.scp' : ();
my $list = $t{utt2spk} ? 'utt2spk' : $t{segments} ? 'segments' : 'wav.scp';
my @orig_utts = sort keys %{ $t{$list}{line} };
my %keep;
for my $u (@orig_utts) {
  $keep{$u} = 1 unless grep { !exists $t{$_}{line}{$u} } @utt_files;
}
if ($t{segments}) {
  # A segment of a recording that is gone cannot be read.
  for my $u (keys %keep) {
    my (undef, $reco) = split(' ', $t{segments}{line}{$u});
    delete $keep{$u} unless exists $t{'wav.scp'}{line}{$reco};
  }
}
my @kept = grep { $keep{$_} } @orig_utts;
my @removed = grep { !$keep{$_} } @orig_utts;

for my $name (grep { $t{$_} } ('utt2spk', @utt_files)) { write_table($t{$name}, \%keep); }
if ($t{segments}) {
  # Keep only the recordings some kept segment still uses.
  my %recos;
  for my $u (@kept) { my (undef, $r) = split(' ', $t{segments}{line}{$u}); $recos{$r} = 1; }
  write_table($t{'wav.scp'}, \%recos);
  write_table($t{reco2dur}, \%recos) if $t{reco2dur};
} elsif ($t{reco2dur}) {
  write_table($t{reco2dur}, \%keep);    # recording = utterance here
}

# spk2utt from the fixed utt2spk; speakers in sorted order.
if ($t{utt2spk}) {
  my %spk_utts;
  for my $u (@kept) {
    my (undef, $s) = split(' ', $t{utt2spk}{line}{$u});
    push @{ $spk_utts{$s} }, $u;
  }
  my $tmp = "$data/spk2utt.tmp.$$";
  open(my $fh, '>', $tmp) or fail("cannot write $tmp: $!");
  print $fh "$_ @{ $spk_utts{$_} }\n" for sort keys %spk_utts;
  close $fh or fail("error writing $tmp: $!");
  rename($tmp, "$data/spk2utt") or fail("cannot replace $data/spk2utt: $!");
  write_table($t{spk2gender}, { map { $_ => 1 } keys %spk_utts }) if $t{spk2gender};
}

print "$me: kept " . scalar(@kept) . " utterances out of " . scalar(@orig_utts) . "\n";
if (@removed) {
  my @show = @removed > 10 ? @removed[0 .. 9] : @removed;
  print "$me: removed utterances: @show" . (@removed > 10 ? " ... (" . (@removed - 10) . " more)" : "") . "\n";
}
print STDERR "$me: no utterances left in $data\n" unless @kept;
exit 0;
PERL
echo "$me: old files are in $data/.backup"
