#!/usr/bin/env perl
# filter_scp.pl: keep (or with --exclude, drop) the lines of a table whose
# field N is one of the ids listed in the first field of <id-list>.
#
#   filter_scp.pl [--exclude] [-f N] <id-list> [<in.scp>|-] > out.scp
#
# Output keeps the order of <in.scp>; <id-list> only supplies a set.
use strict;
use warnings;

my $usage = <<'USAGE';
Usage: filter_scp.pl [--exclude] [-f <field>] <id-list> [<in.scp>] > <out.scp>
Prints the lines of <in.scp> (stdin if omitted or "-") whose field <field>
(1-based, default 1) is among the first fields of <id-list>; with --exclude,
the lines whose field is not.  The order of <in.scp> is kept.
USAGE

sub usage_error {
  print STDERR "filter_scp.pl: $_[0]\n" if defined $_[0];
  print STDERR $usage;
  exit 1;
}
sub fail { print STDERR "filter_scp.pl: $_[0]\n"; exit 1; }

my $exclude = 0;
my $field = 1;
while (@ARGV && $ARGV[0] =~ m/^-./) {
  my $arg = shift @ARGV;
  if ($arg eq '--exclude') {
    $exclude = 1;
  } elsif ($arg eq '-f' || $arg =~ m/^-f(\d+)$/) {
    my $val = $1 // shift @ARGV;
    usage_error("-f requires a positive field number") unless defined $val && $val =~ m/^\d+$/ && $val > 0;
    $field = $val;
  } else {
    usage_error("unknown option $arg");
  }
}
usage_error() unless @ARGV == 1 || @ARGV == 2;
my ($id_file, $in_file) = @ARGV;
$in_file = '-' unless defined $in_file;
fail("the id list cannot be stdin") if $id_file eq '-';

open(my $ids, '<', $id_file) or fail("cannot open id list $id_file: $!");
my %keep;
while (my $line = <$ids>) {
  my ($id) = split(' ', $line);
  fail("empty line $. in id list $id_file") unless defined $id;
  $keep{$id} = 1;
}
close $ids;

my $in;
if ($in_file eq '-') {
  $in = \*STDIN;
} else {
  open($in, '<', $in_file) or fail("cannot open input file $in_file: $!");
}
my $in_name = $in_file eq '-' ? 'stdin' : $in_file;
while (my $line = <$in>) {
  my @f = split(' ', $line);
  # A line too short to have the field is malformed, not "not in the list".
  fail("line $. of $in_name has fewer than $field fields: $line") if @f < $field;
  print $line if ($keep{ $f[$field - 1] } ? 1 : 0) != $exclude;
}
close $in unless $in_file eq '-';
exit 0;
