#!/usr/bin/env perl
# split_scp.pl: split a Kaldi-style scp/table file into contiguous parts.
#
#   split_scp.pl [options] <in.scp> <out1.scp> [<out2.scp> ...]
#   split_scp.pl [options] -j <num-jobs> <job-id> <in.scp> [<out.scp>]
#
# Lines keep their order; each output gets one contiguous run of lines, so
# sorted input gives sorted outputs (what Kaldi tables require).
use strict;
use warnings;

my $usage = <<'EOF';
Usage: split_scp.pl [options] <in.scp> <out1.scp> [<out2.scp> ...]
   or: split_scp.pl [options] -j <num-jobs> <job-id> <in.scp> [<out.scp>]
Splits the lines of <in.scp> (key = first field) into contiguous parts.
By default the parts differ in size by at most one line.  With -j, only
part <job-id> (0-based; 1-based with --one-based) is written, to stdout
unless <out.scp> is given.
Options:
  --utt2spk <file>   never split a speaker (contiguous run of keys with the
                     same speaker) across parts
  --utt2dur <file>   balance the parts by total duration instead of lines
  --one-based        job ids for -j run from 1 to num-jobs
  -j <n> <id>        write only one part
Both --opt value and --opt=value are accepted.
EOF

sub usage_error {
  my ($msg) = @_;
  print STDERR "split_scp.pl: $msg\n" if defined $msg;
  print STDERR $usage;
  exit 1;
}
sub fail { print STDERR "split_scp.pl: $_[0]\n"; exit 1; }

my ($utt2spk_file, $utt2dur_file, $num_jobs, $job_id);
my $one_based = 0;
while (@ARGV && $ARGV[0] =~ m/^-./) {
  my $arg = shift @ARGV;
  if ($arg =~ m/^--(utt2spk|utt2dur)(?:=(.*))?$/s) {
    my ($name, $val) = ($1, $2);
    if (!defined $val) {
      usage_error("option --$name requires a value") unless @ARGV;
      $val = shift @ARGV;
    }
    usage_error("option --$name requires a non-empty value") if $val eq '';
    if ($name eq 'utt2spk') { $utt2spk_file = $val; } else { $utt2dur_file = $val; }
  } elsif ($arg eq '--one-based') {
    $one_based = 1;
  } elsif ($arg eq '-j') {
    usage_error("-j requires <num-jobs> <job-id>") unless @ARGV >= 2;
    ($num_jobs, $job_id) = splice(@ARGV, 0, 2);
    usage_error("-j: num-jobs must be a positive integer, got '$num_jobs'")
      unless $num_jobs =~ m/^\d+$/ && $num_jobs > 0;
    usage_error("-j: job-id must be a non-negative integer, got '$job_id'")
      unless $job_id =~ m/^\d+$/;
  } else {
    usage_error("unknown option $arg");
  }
}

my ($in_file, @out_files);
if (defined $num_jobs) {
  usage_error() unless @ARGV == 1 || @ARGV == 2;
  $in_file = $ARGV[0];
  my $first = $one_based ? 1 : 0;
  my $last = $num_jobs - 1 + $first;
  fail("job-id $job_id out of range $first..$last for -j $num_jobs")
    if $job_id < $first || $job_id > $last;
} else {
  usage_error() unless @ARGV >= 2;
  ($in_file, @out_files) = @ARGV;
}
my $num_parts = defined $num_jobs ? $num_jobs : scalar(@out_files);

# Read the input lines and their keys.
open(my $in, '<', $in_file) or fail("cannot open input file $in_file: $!");
my (@lines, @keys);
while (my $line = <$in>) {
  my ($key) = split(' ', $line);
  fail("empty or blank line $. in $in_file") unless defined $key;
  $line .= "\n" unless $line =~ m/\n$/;
  push @lines, $line;
  push @keys, $key;
}
close $in;
my $n = scalar @lines;
fail("$in_file has $n lines, cannot split it into $num_parts non-empty parts")
  if $n < $num_parts;

# Reads a two-column table <key> <value> into a hash.
sub read_map {
  my ($file, $what) = @_;
  open(my $fh, '<', $file) or fail("cannot open $what file $file: $!");
  my %map;
  while (my $line = <$fh>) {
    my @f = split(' ', $line);
    fail("bad line $. in $what file $file (expected <key> <value>): $line")
      unless @f == 2;
    $map{ $f[0] } = $f[1];
  }
  close $fh;
  return \%map;
}

# Units are what can't be split: single lines, or a speaker's run of lines.
my @unit_start = (0);    # index of the first line of each unit
if (defined $utt2spk_file) {
  my $u2s = read_map($utt2spk_file, 'utt2spk');
  my ($prev, %seen);
  for my $i (0 .. $n - 1) {
    my $spk = $u2s->{ $keys[$i] };
    fail("key $keys[$i] (line " . ($i + 1) . " of $in_file) not found in utt2spk file $utt2spk_file")
      unless defined $spk;
    if ($i > 0 && $spk ne $prev) {
      # A speaker that comes back later would end up in two parts.
      fail("speaker $spk is not contiguous in $in_file (again at line " . ($i + 1)
        . ", key $keys[$i]); sort it so each speaker's keys are together")
        if $seen{$spk};
      push @unit_start, $i;
    }
    $seen{$spk} = 1;
    $prev = $spk;
  }
  fail("$in_file has " . scalar(@unit_start) . " speakers (per $utt2spk_file), "
    . "fewer than the $num_parts parts requested") if @unit_start < $num_parts;
} else {
  @unit_start = (0 .. $n - 1);
}
my $m = scalar @unit_start;

# Weight of each unit: its duration, or its number of lines.
my @weight;
if (defined $utt2dur_file) {
  my $u2d = read_map($utt2dur_file, 'utt2dur');
  for my $u (0 .. $m - 1) {
    my $end = $u + 1 < $m ? $unit_start[$u + 1] : $n;
    my $w = 0;
    for my $i ($unit_start[$u] .. $end - 1) {
      my $d = $u2d->{ $keys[$i] };
      fail("key $keys[$i] (line " . ($i + 1) . " of $in_file) not found in utt2dur file $utt2dur_file")
        unless defined $d;
      fail("duration '$d' of key $keys[$i] in $utt2dur_file is not a non-negative number")
        unless $d =~ m/^(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/;
      $w += $d;
    }
    push @weight, $w;
  }
} else {
  for my $u (0 .. $m - 1) {
    my $end = $u + 1 < $m ? $unit_start[$u + 1] : $n;
    push @weight, $end - $unit_start[$u];
  }
}

# Part boundaries, as unit indices: part p holds units $bound[p] .. $bound[p+1]-1.
my @bound = (0);
if (!defined $utt2spk_file && !defined $utt2dur_file) {
  # Plain split: the first (n mod parts) parts get one extra line.
  my $size = int($n / $num_parts);
  my $extra = $n % $num_parts;
  for my $p (0 .. $num_parts - 1) {
    push @bound, $bound[-1] + $size + ($p < $extra ? 1 : 0);
  }
} else {
  # Greedy on cumulative weight: end part p at the unit boundary whose
  # cumulative weight is closest to (p+1)/parts of the total, while leaving
  # at least one unit for each later part.
  my @cum = (0);
  push @cum, $cum[-1] + $_ for @weight;
  my $total = $cum[-1];
  for my $p (0 .. $num_parts - 2) {
    my $target = $total * ($p + 1) / $num_parts;
    my $lo = $bound[-1] + 1;
    my $hi = $m - ($num_parts - 1 - $p);
    my $b = $lo;
    $b++ while $b < $hi && abs($cum[$b + 1] - $target) < abs($cum[$b] - $target);
    push @bound, $b;
  }
  push @bound, $m;
}

# Writes part p (0-based) to the given handle.
sub write_part {
  my ($fh, $p, $name) = @_;
  my $first = $unit_start[ $bound[$p] ];
  my $last = $bound[$p + 1] < $m ? $unit_start[ $bound[$p + 1] ] - 1 : $n - 1;
  print $fh @lines[ $first .. $last ] or fail("error writing $name: $!");
}

if (defined $num_jobs) {
  my $p = $job_id - ($one_based ? 1 : 0);
  if (@ARGV == 2) {
    open(my $out, '>', $ARGV[1]) or fail("cannot open output file $ARGV[1]: $!");
    write_part($out, $p, $ARGV[1]);
    close $out or fail("error closing $ARGV[1]: $!");
  } else {
    write_part(\*STDOUT, $p, 'stdout');
  }
} else {
  for my $p (0 .. $num_parts - 1) {
    my $name = $out_files[$p];
    open(my $out, '>', $name) or fail("cannot open output file $name: $!");
    write_part($out, $p, $name);
    close $out or fail("error closing $name: $!");
  }
}
exit 0;
