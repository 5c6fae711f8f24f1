# shellcheck shell=bash
# Launchers with Kaldi's command line. "local" runs jobs on this machine with run.pl;
# point cmd_backend at your own queue.pl/slurm.pl setup for a cluster.
cmd_backend=${cmd_backend:-local}

case $cmd_backend in
    local)
        export extract_cmd="run.pl"
        ;;
    slurm)
        export extract_cmd="slurm.pl --config conf/slurm.conf"
        ;;
    *)
        echo "cmd.sh: unknown cmd_backend '$cmd_backend'" >&2
        return 1
        ;;
esac
