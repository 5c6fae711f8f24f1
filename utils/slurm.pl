#!/usr/bin/env perl
# slurm.pl: run a command as a Slurm job array, with Kaldi's launcher
# command line (the same as run.pl's):
#
#   slurm.pl [options] [JOB=1:N] <log-file> <command> [args...]
#
# JOB=a:b (any variable name) becomes one job array, sbatch --array=a-b;
# task k runs <command> with the variable replaced by k, its output going to
# <log-file> (variable replaced by k) between Kaldi's header and footer.
# slurm.pl waits for all tasks (polling squeue), then exits 0 when all of
# them succeeded, and otherwise prints "slurm.pl: K / N failed, log is in
# <log of the first failed task>" and exits 1.  Tasks the scheduler ended
# before they finished (time limit, memory, scancel, node failure) count as
# failed; the state Slurm gives for them (TIMEOUT, CANCELLED, ...) is printed
# and appended to their logs.  On SIGINT/SIGTERM the job array is cancelled.
#
# Per submission, under <dir of log-file>/q/: <name>.sh, the batch script;
# <name>.<k>.out, Slurm's own output of task k (removed when empty);
# <name>.<k>.status, task k's exit status, written when its command ended.
use strict;
use warnings;
use Cwd qw(getcwd);
use File::Basename qw(dirname basename);
use File::Path qw(make_path);
use POSIX qw(strftime setpgid SIGINT SIGTERM SIG_BLOCK SIG_UNBLOCK);

my $usage = <<'EOF';
Usage: slurm.pl [options] [JOB=1:N] <log-file> <command> [args...]
 e.g.: slurm.pl --mem 4G JOB=1:4 exp/log/dump.JOB.log dump.py --part JOB
Runs <command> as a Slurm job array (sbatch --array=1-N), task k with JOB
(any variable name) replaced by k in <log-file> and <command>, and waits.
Options (each maps to sbatch options through the config file):
  --config <file>      Kaldi/ESPnet-style slurm.conf (default: conf/slurm.conf
                       when it exists, else a built-in config that maps the
                       options below and names no partition)
  --gpu <n>            --gres=gpu:<n> (none for 0)
  --mem <m>            --mem <m>            (e.g. 4G)
  --num-threads <n>    --cpus-per-task <n>  (none for 1)
  --time <t>           --time <t>           (e.g. 4:00:00)
  --max-jobs-run <m>   --array=1-N%<m>: at most m tasks at a time
  --<name> <value>     any other option the config file defines
EOF

# The built-in config, used without --config when conf/slurm.conf does not
# exist: no partition, so jobs go to the cluster's default partition.
my $default_config = <<'EOF';
command sbatch --export=PATH
option time=* --time $0
option mem=* --mem $0
option mem=0
option num_threads=* --cpus-per-task $0
option num_threads=1
default gpu=0
option gpu=0
option gpu=* --gres=gpu:$0
EOF

sub usage_error {
  my ($msg) = @_;
  print STDERR "slurm.pl: $msg\n" if defined $msg;
  print STDERR $usage;
  exit 1;
}

sub fail {
  print STDERR "slurm.pl: $_[0]\n";
  exit 1;
}

my $config_file;
my $max_jobs_run;
my %cli_opt;      # name (with underscores) => value, in the order given
my @cli_order;

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
    $name =~ tr/-/_/;
    if ($name eq 'config') {
      $config_file = $val;
    } elsif ($name eq 'max_jobs_run') {
      usage_error("--max-jobs-run needs a positive integer, got '$val'")
        unless $val =~ m/^\d+$/ && $val > 0;
      $max_jobs_run = $val + 0;
    } else {
      if ($name eq 'gpu') {
        usage_error("--gpu needs a non-negative integer, got '$val'") unless $val =~ m/^\d+$/;
        $val += 0;
      } elsif ($name eq 'num_threads') {
        usage_error("--num-threads needs a positive integer, got '$val'")
          unless $val =~ m/^\d+$/ && $val > 0;
        $val += 0;
      }
      push @cli_order, $name unless exists $cli_opt{$name};
      $cli_opt{$name} = $val;
    }
  }
}

# Options may come before and after the JOB=a:b spec, as with Kaldi's launchers.
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

# Join the arguments into one shell command the way Kaldi does (as run.pl):
# words without whitespace verbatim, others single-quoted.
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
  fail("running jobs $jobname=$jobstart:$jobend but the log file "
    . "'$logfile_template' does not contain '$jobname'");
}
my $num_jobs = $jobend - $jobstart + 1;

sub substitute {
  my ($s, $id) = @_;
  $s =~ s/\Q$jobname\E/$id/g if defined $jobname;
  return $s;
}

# ------------------------------------------------------------------ config

my $config_name = 'built-in config';
my $config_text = $default_config;
if (!defined $config_file && -f 'conf/slurm.conf') {
  $config_file = 'conf/slurm.conf';    # Kaldi's default location
}
if (defined $config_file) {
  open(my $fh, '<', $config_file) or fail("cannot read config file $config_file: $!");
  local $/;
  $config_text = <$fh>;
  close $fh;
  $config_name = $config_file;
}

my @submit_cmd;
my %opt_exact;     # name => { value => [args] }
my %opt_any;       # name => [args with $0]
my %opt_default;   # name => value
my @config_order;  # option names in order of first appearance
{
  my %seen;
  my $n = 0;
  for my $line (split /\n/, $config_text) {
    $n++;
    $line =~ s/#.*//;
    $line =~ s/^\s+|\s+$//g;
    next if $line eq '';
    my $where = "$config_name line $n";
    if ($line =~ m/^command\s+(.+)$/) {
      @submit_cmd = split(' ', $1);
    } elsif ($line =~ m/^option\s+([^=\s]+)=\*\s*(.*)$/) {
      (my $name = $1) =~ tr/-/_/;
      $opt_any{$name} = [ split(' ', $2) ];
      push @config_order, $name unless $seen{$name}++;
    } elsif ($line =~ m/^option\s+([^=\s]+)=(\S+)\s*(.*)$/) {
      (my $name = $1) =~ tr/-/_/;
      $opt_exact{$name}{$2} = [ split(' ', $3) ];
      push @config_order, $name unless $seen{$name}++;
    } elsif ($line =~ m/^default\s+([^=\s]+)=(\S+)$/) {
      (my $name = $1) =~ tr/-/_/;
      $opt_default{$name} = $2;
      push @config_order, $name unless $seen{$name}++;
    } else {
      fail("cannot parse $where: '$line'");
    }
  }
  fail("$config_name has no 'command' line (e.g. 'command sbatch --export=PATH')")
    unless @submit_cmd;
}

# Command-line options first, then defaults for the rest.
my %value = %opt_default;
$value{$_} = $cli_opt{$_} for keys %cli_opt;
my @sbatch_opts;
for my $name (@config_order, grep { my $n = $_; !grep { $_ eq $n } @config_order } @cli_order) {
  next unless exists $value{$name};
  my $v = $value{$name};
  (my $dashed = $name) =~ tr/_/-/;
  if (exists $opt_exact{$name} && exists $opt_exact{$name}{$v}) {
    push @sbatch_opts, @{ $opt_exact{$name}{$v} };
  } elsif (exists $opt_any{$name}) {
    push @sbatch_opts, map { s/\$0/$v/gr } @{ $opt_any{$name} };
  } elsif (exists $opt_exact{$name} || exists $opt_default{$name}) {
    fail("--$dashed $v is not allowed by $config_name");
  } else {
    fail("option --$dashed is not described in $config_name");
  }
}
my $num_threads = $value{num_threads} // 1;

# ------------------------------------------------------------- the script

my $cwd = getcwd();
my $abs = sub { my $p = shift; return $p =~ m{^/} ? $p : "$cwd/$p"; };
# Files of this submission go to <log dir>/q/, named after the log file
# without the job variable: log/x.JOB.log -> log/q/x.sh.
my $logdir = dirname($logfile_template);
$logdir = substitute($logdir, $jobstart) if defined $jobname;
my $qdir = "$logdir/q";
my $base = basename($logfile_template);
if (defined $jobname) {
  $base =~ s/\.\Q$jobname\E\b//g;
  $base =~ s/\Q$jobname\E//g;
}
$base =~ s/\.log$//;
$base = 'job' if $base eq '' || $base eq '.';
eval { make_path($qdir) } unless -d $qdir;
fail("cannot create directory $qdir") unless -d $qdir;
my $script = "$qdir/$base.sh";
my $status_prefix = $abs->("$qdir/$base");    # + ".<k>.status"

sub status_file { return "$status_prefix.$_[0].status"; }
sub task_log { return substitute($logfile_template, $_[0]); }

sub shq {    # single-quote for bash
  my ($s) = @_;
  $s =~ s/'/'\\''/g;
  return "'$s'";
}

sub now { return strftime("%a %b %e %H:%M:%S %Z %Y", localtime); }

# Stale results of an earlier run must not be taken for this one's.
for my $id ($jobstart .. $jobend) {
  unlink(status_file($id), task_log($id), "$qdir/$base.$id.out");
}

my $array = "$jobstart-$jobend";
$array .= "%$max_jobs_run" if defined $max_jobs_run && $max_jobs_run < $num_jobs;
my @sbatch = (@submit_cmd, "--job-name=$base", '--output=' . $abs->("$qdir/$base.%a.out"),
              @sbatch_opts, "--array=$array", '--parsable', $abs->($script));

my $subst = defined $jobname ? "\${cmd_template//$jobname/\$task}" : '$cmd_template';
my $lsubst = defined $jobname ? "\${log_template//$jobname/\$task}" : '$log_template';
my $cmdline = join(' ', map { m/^[\w\/.,:=%+\@-]+$/ ? $_ : shq($_) } @sbatch);
my $script_text = <<"EOF";
#!/usr/bin/env bash
# Written by slurm.pl at @{[now()]}, submitted as
#   $cmdline
# One task of a Slurm job array: SLURM_ARRAY_TASK_ID is the job number that
# replaces @{[ $jobname // "nothing" ]} in the log file and command below.
cd @{[shq($cwd)]} || exit 1
[ -f ./path.sh ] && . ./path.sh
task=\${SLURM_ARRAY_TASK_ID:?this script runs as a task of a Slurm job array}
cmd_template=@{[shq($cmd_template)]}
log_template=@{[shq($logfile_template)]}
cmd=$subst
log=$lsubst
status=@{[shq($status_prefix)]}.\$task.status
now() { LC_ALL=C date '+%a %b %e %H:%M:%S %Z %Y'; }
mkdir -p "\$(dirname "\$log")"
{
  printf '# %s\\n' "\$cmd"
  echo "# Started at \$(now)"
  echo "# Running on \$(hostname) as Slurm job \${SLURM_ARRAY_JOB_ID}_\$task"
  echo "#"
} >"\$log" || exit 1
t0=\$(date +%s)
# CUDA_VISIBLE_DEVICES is Slurm's (the task's own GPUs with --gres): kept.
bash -c "\$cmd" </dev/null >>"\$log" 2>&1
ret=\$?
t1=\$(date +%s)
{
  echo "# Accounting: time=\$((t1 - t0)) threads=$num_threads"
  echo "# Ended (code \$ret) at \$(now), elapsed time \$((t1 - t0)) seconds"
  echo "# Finished at \$(now) with status \$ret"
} >>"\$log"
echo "\$ret" >"\$status.tmp" && mv -f "\$status.tmp" "\$status"
exit \$ret
EOF
{
  my $fh;
  open($fh, '>', "$script.tmp") && print($fh $script_text) && close($fh)
    && chmod(0755, "$script.tmp") && rename("$script.tmp", $script)
    or fail("cannot write $script: $!");
}

# ------------------------------------------------------------------ helpers

# Runs a command with stdout+stderr captured, in its own process group (a
# Ctrl-C at the terminal is slurm.pl's to handle).  Returns (status, output).
sub capture {
  my @cmd = @_;
  my $pid = open(my $fh, '-|');
  if (!defined $pid) {
    return (-1, "cannot fork: $!");
  }
  if ($pid == 0) {
    $SIG{INT} = $SIG{TERM} = 'DEFAULT';
    POSIX::sigprocmask(SIG_UNBLOCK, POSIX::SigSet->new(SIGINT, SIGTERM));
    setpgid(0, 0);
    open(STDERR, '>&', \*STDOUT);
    open(STDIN, '<', '/dev/null');
    exec(@cmd) or do { print "cannot run $cmd[0]: $!\n"; POSIX::_exit(127); };
  }
  my $out = do { local $/; <$fh> } // '';
  close($fh);
  return ($?, $out);
}

my $jobid;          # the array's Slurm job id once submitted
my $stopping = 0;

# Tasks of the array still in the queue (pending/running/completing):
# task id => state; undef when squeue could not be asked.
sub queued_tasks {
  my ($st, $out) = capture('squeue', '-h', '-r', '-j', $jobid, '-o', '%K %T');
  if ($st != 0) {
    # A job the controller has forgotten is no longer queued.
    return {} if $out =~ m/Invalid job id/i;
    return undef;
  }
  my %q;
  for my $line (split /\n/, $out) {
    $q{$1} = $2 if $line =~ m/^\s*(\d+)\s+(\S+)/;
  }
  return \%q;
}

# What Slurm says about each task: task id => "STATE (reason R, exit code E)".
sub task_states {
  my %info;
  my ($st, $out) = capture('scontrol', '-o', 'show', 'job', $jobid);
  if ($st == 0) {
    for my $line (split /\n/, $out) {
      next unless $line =~ m/\bArrayTaskId=(\d+)\b/;
      my $id = $1;
      my ($state) = $line =~ m/\bJobState=(\S+)/;
      my ($reason) = $line =~ m/\bReason=(\S+)/;
      my ($code) = $line =~ m/\bExitCode=(\S+)/;
      next unless defined $state;
      $info{$id} = { state => $state, text => $state
        . (defined $reason && $reason ne 'None' ? ", reason $reason" : '')
        . (defined $code ? ", exit code $code" : '') };
    }
  }
  if (!%info) {    # purged from slurmctld's memory: ask accounting, if any
    ($st, $out) = capture('sacct', '-n', '-P', '-X', '-j', $jobid, '-o', 'JobID,State,ExitCode');
    if ($st == 0) {
      for my $line (split /\n/, $out) {
        my ($jid, $state, $code) = split /\|/, $line;
        next unless defined $code && $jid =~ m/^\d+_(\d+)$/;
        (my $s = $state) =~ s/\s.*//;    # "CANCELLED by 0" -> CANCELLED
        $info{$1} = { state => $s, text => "$state, exit code $code" };
      }
    }
  }
  return \%info;
}

sub append_log {
  my ($id, $text) = @_;
  my $log = task_log($id);
  make_path(dirname($log)) unless -d dirname($log);
  if (open(my $fh, '>>', $log)) {
    print $fh $text;
    close $fh;
  }
}

# On INT/TERM cancel the array and wait (a while) until its tasks are gone.
sub on_signal {
  my ($sig) = @_;
  return if $stopping++;
  if (defined $jobid) {
    print STDERR "slurm.pl: got SIG$sig, cancelling Slurm job $jobid\n";
    capture('scancel', $jobid);
    my $deadline = time() + 20;
    while (time() < $deadline) {
      my $q = queued_tasks();
      last if defined $q && !%$q;
      select(undef, undef, undef, 0.2);
    }
    for my $id ($jobstart .. $jobend) {
      append_log($id, "# slurm.pl: cancelled (slurm.pl got SIG$sig) at " . now() . "\n")
        unless -e status_file($id);
    }
  }
  exit($sig eq 'INT' ? 130 : 143);
}
$SIG{INT} = sub { on_signal('INT') };
$SIG{TERM} = sub { on_signal('TERM') };

# --------------------------------------------------------------- submission

# Signals wait until the job id is known, so that the array never outlives
# an interrupted slurm.pl.
my $sigset = POSIX::SigSet->new(SIGINT, SIGTERM);
POSIX::sigprocmask(SIG_BLOCK, $sigset);
my ($st, $out) = capture(@sbatch);
if ($st == 0 && $out =~ m/^(\d+)(?:;\S*)?\s*$/m) {
  $jobid = $1;
}
POSIX::sigprocmask(SIG_UNBLOCK, $sigset);
if (!defined $jobid) {
  $out =~ s/\s+$//;
  my $code = $st == -1 ? -1 : ($st & 127) ? 'signal ' . ($st & 127) : $st >> 8;
  print STDERR "slurm.pl: submission failed (exit status $code): $out\n";
  print STDERR "slurm.pl: command was: $cmdline\n";
  exit 1;
}

# --------------------------------------------------------------------- wait

my %left = map { $_ => 1 } ($jobstart .. $jobend);
my $file_poll = $num_jobs <= 100 ? 0.25 : 1.0;
my $queue_poll = 1.0;      # grows to 10 s for long runs
my $next_queue_check = time() + 0.5;
my $queue_failures = 0;
while (1) {
  for my $id (keys %left) {
    delete $left{$id} if -e status_file($id);
  }
  last unless %left;
  if (time() >= $next_queue_check) {
    my $q = queued_tasks();
    if (!defined $q) {
      $queue_failures++;
      print STDERR "slurm.pl: squeue does not answer (Slurm job $jobid); still waiting\n"
        if $queue_failures == 10;
    } else {
      $queue_failures = 0;
      last unless grep { exists $q->{$_} } keys %left;
    }
    $next_queue_check = time() + $queue_poll;
    $queue_poll = $queue_poll * 1.2 > 10 ? 10 : $queue_poll * 1.2;
  }
  select(undef, undef, undef, $file_poll);
}

# Tasks that left the queue without a status file: the scheduler ended them
# (or, on a shared file system, the file is not visible here yet).
if (%left) {
  my $info = task_states();
  my $deadline = time() + 5;
  for my $id (sort { $a <=> $b } keys %left) {
    my $state = exists $info->{$id} ? $info->{$id}{state} : '';
    # A task that ended by itself wrote its status: give a shared file
    # system time to show it.  One the scheduler killed (TIMEOUT,
    # CANCELLED, OUT_OF_MEMORY, ...) did not.
    my $wait_until = $state =~ m/^(COMPLETED|FAILED)$/ ? time() + 60
                   : $state eq '' ? $deadline : time() + 1;
    while (!-e status_file($id) && time() < $wait_until) {
      select(undef, undef, undef, 0.25);
    }
    delete $left{$id} if -e status_file($id);
  }
}

# Slurm's own output of a task is normally empty: keep only what says something.
for my $id ($jobstart .. $jobend) {
  my $o = "$qdir/$base.$id.out";
  unlink($o) if -e $o && -z _;
}

my %failed;
for my $id ($jobstart .. $jobend) {
  my $f = status_file($id);
  if (exists $left{$id}) {
    $failed{$id} = 1;
    next;
  }
  my $code = 1;
  if (open(my $fh, '<', $f)) {
    my $line = <$fh>;
    close $fh;
    $code = $1 if defined $line && $line =~ m/^(\d+)/;
  }
  $failed{$id} = 1 if $code != 0;
}
if (%left) {
  my $info = task_states();
  for my $id (sort { $a <=> $b } keys %left) {
    my $what = exists $info->{$id} ? "Slurm state $info->{$id}{text}"
                                   : 'Slurm state unknown (job no longer known to slurmctld)';
    my $msg = "Slurm job ${jobid}_$id ended without finishing the command: $what";
    my $jobdesc = defined $jobname ? "$jobname=$id" : 'job';
    print STDERR "slurm.pl: $jobdesc: $msg\n";
    append_log($id, "# slurm.pl: $msg\n# Ended (no exit status) at " . now() . "\n");
  }
}

if (%failed) {
  my @ids = sort { $a <=> $b } keys %failed;
  my $log = task_log($ids[0]);
  if ($num_jobs == 1) {
    print STDERR "slurm.pl: job failed, log is in $log\n";
  } else {
    print STDERR "slurm.pl: " . scalar(@ids) . " / $num_jobs failed, log is in $log\n";
  }
  exit 1;
}
exit 0;
