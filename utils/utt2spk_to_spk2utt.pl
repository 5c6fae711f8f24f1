#!/usr/bin/env perl
# utt2spk_to_spk2utt.pl: convert "<utt> <spk>" lines into "<spk> <utt1> <utt2> ...".
#
#   utt2spk_to_spk2utt.pl [<utt2spk>] > spk2utt
#
# Speakers come out in order of first appearance (sorted order for a sorted
# Kaldi utt2spk), utterances in input order.
use strict;
use warnings;

if (@ARGV > 1 || (@ARGV && $ARGV[0] =~ m/^-./)) {
  print STDERR "Usage: utt2spk_to_spk2utt.pl [<utt2spk>] > <spk2utt>\n"
    . "Reads <utt2spk> (stdin if omitted or \"-\") and writes spk2utt to stdout.\n";
  exit 1;
}
my $file = @ARGV ? $ARGV[0] : '-';
my $in;
if ($file eq '-') {
  $in = \*STDIN;
  $file = 'stdin';
} else {
  open($in, '<', $file) or do { print STDERR "utt2spk_to_spk2utt.pl: cannot open $file: $!\n"; exit 1; };
}
my (@spks, %utts);
while (my $line = <$in>) {
  my @f = split(' ', $line);
  if (@f != 2) {
    print STDERR "utt2spk_to_spk2utt.pl: bad line $. in $file (expected <utt> <spk>): $line";
    exit 1;
  }
  my ($utt, $spk) = @f;
  push @spks, $spk unless exists $utts{$spk};
  push @{ $utts{$spk} }, $utt;
}
print "$_ @{ $utts{$_} }\n" for @spks;
exit 0;
