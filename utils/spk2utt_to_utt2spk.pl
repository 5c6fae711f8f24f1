#!/usr/bin/env perl
# spk2utt_to_utt2spk.pl: convert "<spk> <utt1> <utt2> ..." lines into "<utt> <spk>".
#
#   spk2utt_to_utt2spk.pl [<spk2utt>] > utt2spk
#
# Output follows the input order; pipe through `LC_ALL=C sort` if needed.
use strict;
use warnings;

if (@ARGV > 1 || (@ARGV && $ARGV[0] =~ m/^-./)) {
  print STDERR "Usage: spk2utt_to_utt2spk.pl [<spk2utt>] > <utt2spk>\n"
    . "Reads <spk2utt> (stdin if omitted or \"-\") and writes utt2spk to stdout.\n";
  exit 1;
}
my $file = @ARGV ? $ARGV[0] : '-';
my $in;
if ($file eq '-') {
  $in = \*STDIN;
  $file = 'stdin';
} else {
  open($in, '<', $file) or do { print STDERR "spk2utt_to_utt2spk.pl: cannot open $file: $!\n"; exit 1; };
}
while (my $line = <$in>) {
  my ($spk, @utts) = split(' ', $line);
  if (!@utts) {
    print STDERR "spk2utt_to_utt2spk.pl: bad line $. in $file (expected <spk> <utt1> [<utt2> ...]): $line";
    exit 1;
  }
  print "$_ $spk\n" for @utts;
}
exit 0;
