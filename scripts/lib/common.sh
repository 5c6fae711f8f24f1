# Helpers shared by the stages in scripts/ (sourced, not run).

log() {
    local fname=${BASH_SOURCE[1]##*/}
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*" >&2
}

# Exits unless $1 is a --device the workers take: cpu, cuda or cuda:N.
require_device() {
    if ! [[ $1 =~ ^(cpu|cuda|cuda:[0-9]+)$ ]]; then
        log "ERROR: --device must be cpu, cuda or cuda:N, got '$1'"
        exit 1
    fi
}

# Exits unless the python $1 imports speechdump.
require_speechdump() {
    if ! "$1" -c "import speechdump" 2>/dev/null; then
        log "ERROR: '$1' cannot import speechdump: source the recipe's path.sh (or make setup)"
        exit 1
    fi
}
