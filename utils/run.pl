#!/usr/bin/env perl
# run.pl: run a command locally, optionally as an array of jobs, Kaldi style.
#
#   run.pl [options] [JOB=1:N] <log-file> <command> [args...]
#
# Every occurrence of the job variable (JOB here; any name works, e.g.
# SPLIT=1:4) in <log-file> and in the command is replaced by the job number.
# Each job runs under `bash -c` in its own process group with stdout and
# stderr appended to its log, which gets a header and a footer.
use strict;
use warnings;
use File::Basename qw(dirname);
use File::Path qw(make_path);
use POSIX qw(strftime setpgid WNOHANG SIGINT SIGTERM SIG_BLOCK SIG_UNBLOCK);

my $usage = <<'EOF';
Usage: run.pl [options] [JOB=1:N] <log-file> <command> [args...]
 e.g.: run.pl JOB=1:4 exp/log/dump.JOB.log dump.py --part JOB
Runs <command> locally; with JOB=k:l (any variable name) it runs jobs k..l,
replacing the variable in <log-file> and <command> by the job number.
Options:
  --max-jobs-run <n>   run at most n jobs at a time (default: number of CPUs)
  --gpu <n>            give each job n GPUs of its own via CUDA_VISIBLE_DEVICES
                       (default 0: CUDA_VISIBLE_DEVICES is left alone)
  --num-threads <n>    threads per job; only recorded in the log here
  --mem <m>, --time <t>, --config <file>
                       accepted for compatibility with cluster launchers;
                       no effect when running locally
EOF

sub usage_error {
  my ($msg) = @_;
  print STDERR "run.pl: $msg\n" if defined $msg;
  print STDERR $usage;
  exit 1;
}

my $max_jobs_run = undef;
my $gpu = 0;
my $num_threads = 1;
my %opt_seen;

sub parse_options {
  while (@ARGV && $ARGV[0] =~ m/^--/) {
    my $arg = shift @ARGV;
    my ($name, $val);
    if ($arg =~ m/^--([^=]+)=(.*)$/s) {
      ($name, $val) = ($1, $2);
    } else {
      $name = substr($arg, 2);
      usage_error("option $arg requires a value") unless @ARGV;
      $val = shift @ARGV;
    }
    $name =~ tr/_/-/;
    if ($name eq 'max-jobs-run') {
      usage_error("--max-jobs-run needs a positive integer, got '$val'")
        unless $val =~ m/^\d+$/ && $val > 0;
      $max_jobs_run = $val;
    } elsif ($name eq 'gpu') {
      usage_error("--gpu needs a non-negative integer, got '$val'")
        unless $val =~ m/^\d+$/;
      $gpu = $val + 0;
    } elsif ($name eq 'num-threads') {
      usage_error("--num-threads needs a positive integer, got '$val'")
        unless $val =~ m/^\d+$/ && $val > 0;
      $num_threads = $val;
    } elsif ($name eq 'mem' || $name eq 'time' || $name eq 'config') {
      # Meaningful only to queue/slurm launchers that share this command
      # line; a local run has nothing to reserve, so they are ignored.
    } else {
      usage_error("unknown option $arg");
    }
  }
}

# Options may come before and after the JOB=k:l spec, as with Kaldi's
# launchers.
my ($jobname, $jobstart, $jobend);
parse_options();
if (@ARGV && $ARGV[0] =~ m/^([A-Za-z_][A-Za-z0-9_]*)=(\d+):(\d+)$/) {
  ($jobname, $jobstart, $jobend) = ($1, $2 + 0, $3 + 0);
  shift @ARGV;
  usage_error("invalid job range $jobname=$jobstart:$jobend (end < start)")
    if $jobend < $jobstart;
} elsif (@ARGV && $ARGV[0] =~ m/^([A-Za-z_][A-Za-z0-9_]*)=(\d+)$/) {
  ($jobname, $jobstart, $jobend) = ($1, $2 + 0, $2 + 0);
  shift @ARGV;
}
parse_options();

usage_error() if @ARGV < 2;
my $logfile_template = shift @ARGV;

# Join the arguments into one shell command the way Kaldi does: words
# without whitespace go in verbatim, so an escaped \| or a quoted "a|b" on
# the caller's command line becomes a pipe here; words with whitespace are
# single-quoted so they stay one word.
my @words;
for my $x (@ARGV) {
  if ($x =~ m/^\S+$/) {
    push @words, $x;
  } else {
    (my $q = $x) =~ s/'/'\\''/g;
    push @words, "'$q'";
  }
}
my $cmd_template = join(' ', @words);

if (!defined $jobname) {
  ($jobstart, $jobend) = (1, 1);
} elsif ($jobend > $jobstart && index($logfile_template, $jobname) < 0) {
  # All jobs would write to the same log and clobber each other.
  print STDERR "run.pl: running jobs $jobname=$jobstart:$jobend but the log file "
    . "'$logfile_template' does not contain '$jobname'\n";
  exit 1;
}
my $num_jobs = $jobend - $jobstart + 1;

sub substitute {
  my ($s, $id) = @_;
  $s =~ s/\Q$jobname\E/$id/g if defined $jobname;
  return $s;
}

sub num_cpus {
  my $n = `nproc 2>/dev/null`;
  return $1 if defined $n && $n =~ m/^\s*(\d+)/ && $1 > 0;
  if (open(my $fh, '<', '/proc/cpuinfo')) {
    my $c = grep { m/^processor\s*:/ } <$fh>;
    close $fh;
    return $c if $c > 0;
  }
  return 1;
}
$max_jobs_run = num_cpus() unless defined $max_jobs_run;

# GPUs: each running job gets $gpu ids nobody else running holds.
my @free_gpus;
my $use_gpus = 0;
if ($gpu > 0) {
  my @ids;
  if (exists $ENV{CUDA_VISIBLE_DEVICES}) {
    # The caller already restricted the visible devices; share only those.
    @ids = grep { length } map { s/^\s+|\s+$//gr } split(/,/, $ENV{CUDA_VISIBLE_DEVICES});
  } elsif (grep { -x "$_/nvidia-smi" } split(/:/, $ENV{PATH} // '')) {
    my @lines = `nvidia-smi -L 2>/dev/null`;
    if ($? == 0) {
      my $n = grep { m/^GPU\s+\d+/ } @lines;
      @ids = (0 .. $n - 1);
    }
  }
  if (!@ids) {
    print STDERR "run.pl: --gpu $gpu requested but no GPU found; jobs run without CUDA_VISIBLE_DEVICES\n";
  } elsif (@ids < $gpu) {
    print STDERR "run.pl: --gpu $gpu requested but only " . scalar(@ids) . " GPU(s) found: @ids\n";
    exit 1;
  } else {
    $use_gpus = 1;
    @free_gpus = @ids;
    my $slots = int(@ids / $gpu);
    $max_jobs_run = $slots if $slots < $max_jobs_run;
  }
}

sub now { return strftime("%a %b %e %H:%M:%S %Z %Y", localtime); }

my %running;    # pid => { id, log, start, gpus }
my %failed;     # job id => log file
my $stopping = 0;

# On INT/TERM take the jobs down with us: each job is its own process group,
# so a signal sent to run.pl alone (e.g. kill, or a scheduler) would not
# reach them otherwise.  No footers are written: the jobs did not finish.
sub on_signal {
  my ($sig) = @_;
  return if $stopping++;
  my @pids = keys %running;
  kill 'TERM', map { -$_ } @pids;
  my $deadline = time() + 2;
  while (%running && time() < $deadline) {
    for my $pid (keys %running) {
      delete $running{$pid} if waitpid($pid, WNOHANG) != 0;
    }
    select(undef, undef, undef, 0.05) if %running;
  }
  kill 'KILL', map { -$_ } @pids;    # whole groups: stragglers of finished leaders too
  for my $pid (keys %running) { waitpid($pid, 0); }
  exit($sig eq 'INT' ? 130 : 143);
}
$SIG{INT} = sub { on_signal('INT') };
$SIG{TERM} = sub { on_signal('TERM') };

my $sigset = POSIX::SigSet->new(SIGINT, SIGTERM);

sub start_job {
  my ($id) = @_;
  my $log = substitute($logfile_template, $id);
  my $cmd = substitute($cmd_template, $id);
  my $dir = dirname($log);
  if (!-d $dir) {
    eval { make_path($dir) };
    if (!-d $dir) {
      print STDERR "run.pl: cannot create log directory $dir\n";
      $failed{$id} = $log;
      return;
    }
  }
  my $fh;
  if (!open($fh, '>', $log)) {
    print STDERR "run.pl: cannot write log file $log: $!\n";
    $failed{$id} = $log;
    return;
  }
  print $fh "# $cmd\n# Started at " . now() . "\n#\n";
  close $fh;
  my @gpus = $use_gpus ? splice(@free_gpus, 0, $gpu) : ();

  # Signals are blocked across fork so a job is never started without being
  # recorded in %running (the handler could not kill it otherwise).
  POSIX::sigprocmask(SIG_BLOCK, $sigset);
  my $pid = fork();
  if (!defined $pid) {
    POSIX::sigprocmask(SIG_UNBLOCK, $sigset);
    print STDERR "run.pl: fork failed: $!\n";
    exit 1;
  }
  if ($pid == 0) {
    $SIG{INT} = $SIG{TERM} = 'DEFAULT';
    POSIX::sigprocmask(SIG_UNBLOCK, $sigset);
    setpgid(0, 0);
    $ENV{CUDA_VISIBLE_DEVICES} = join(',', @gpus) if $use_gpus;
    # stdin from /dev/null: a job in a background process group that read
    # the terminal would be stopped (SIGTTIN), and parallel jobs cannot
    # share one input stream anyway.
    open(STDIN, '<', '/dev/null');
    open(STDOUT, '>>', $log) or die "run.pl: cannot append to $log: $!\n";
    open(STDERR, '>&', \*STDOUT) or die "run.pl: cannot redirect stderr: $!\n";
    # As in Kaldi, no pipefail: a pipeline's status is its last command's.
    exec('bash', '-c', $cmd) or die "run.pl: cannot run bash: $!\n";
  }
  setpgid($pid, $pid);    # also from the parent, so the group exists before any kill
  $running{$pid} = { id => $id, log => $log, start => time(), gpus => \@gpus };
  POSIX::sigprocmask(SIG_UNBLOCK, $sigset);
}

sub finish_job {
  my ($pid, $status) = @_;
  my $job = delete $running{$pid};
  return unless $job;
  my $code = ($status & 127) ? 128 + ($status & 127) : ($status >> 8);
  my $elapsed = time() - $job->{start};
  push @free_gpus, @{ $job->{gpus} } if $use_gpus;
  if (open(my $fh, '>>', $job->{log})) {
    print $fh "# Accounting: time=$elapsed threads=$num_threads\n";
    print $fh "# Ended (code $code) at " . now() . ", elapsed time $elapsed seconds\n";
    close $fh;
  } else {
    print STDERR "run.pl: cannot append to log file $job->{log}: $!\n";
    $code ||= 1;
  }
  $failed{ $job->{id} } = $job->{log} if $code != 0;
}

my @pending = ($jobstart .. $jobend);
while (@pending || %running) {
  while (@pending && scalar(keys %running) < $max_jobs_run) {
    start_job(shift @pending);
  }
  last unless %running;
  my $pid = waitpid(-1, 0);
  last if $pid < 0;
  finish_job($pid, $?);
}

if (%failed) {
  my @ids = sort { $a <=> $b } keys %failed;
  my $log = $failed{ $ids[0] };
  if ($num_jobs == 1) {
    print STDERR "run.pl: job failed, log is in $log\n";
  } else {
    print STDERR "run.pl: " . scalar(@ids) . " / $num_jobs failed, log is in $log\n";
  }
  exit 1;
}
exit 0;
