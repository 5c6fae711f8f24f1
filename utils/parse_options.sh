#!/usr/bin/env bash
# parse_options.sh: command-line option parsing for bash scripts, Kaldi style.
#
# Usage (in a script, after the default values are set):
#   nj=4
#   use_gpu=false
#   help_message="Usage: $0 [options] <data-dir>"
#   . utils/parse_options.sh
#
# Accepts --name value and --name=value; dashes in the name map to
# underscores (--batch-seconds and --batch_seconds both set batch_seconds).
# Only variables the caller already set can be given, so a typo is an error
# rather than a silently ignored setting.  If the current value is true or
# false, the new value must be true or false too.
#   --config FILE   source FILE (shell assignments); config files are applied
#                   before all other options, so the command line wins over
#                   them wherever --config appears (as in Kaldi).
#   --help, -h      print $help_message to stderr and exit 0.
# Parsing stops at the first argument not starting with -- (or after --);
# the remaining arguments are left in "$@" of the caller.
#
# This file is sourced, so it shifts the caller's "$@" and must leave no
# traces: every helper variable is prefixed with __po_ and unset at the end.
# It only uses constructs that are safe under `set -euo pipefail`.

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  echo "parse_options.sh: this file must be sourced from a bash script, not run" >&2
  exit 1
fi

# Pass 1: source every --config file first, walking the same option grammar
# as pass 2 so that option values are not mistaken for options.
__po_i=1
while [ "$__po_i" -le "$#" ]; do
  __po_arg=${!__po_i}
  __po_file=
  __po_step=1
  case "$__po_arg" in
    --) break ;;
    --config=*) __po_file=${__po_arg#--config=} ;;
    --config)
      if [ "$__po_i" -ge "$#" ]; then
        echo "parse_options.sh: option --config requires a value" >&2
        exit 1
      fi
      __po_j=$((__po_i + 1))
      __po_file=${!__po_j}
      __po_step=2
      ;;
    --help | -h | --*=*) ;;
    --*) __po_step=2 ;;
    *) break ;;
  esac
  if [ -n "$__po_file" ] || [ "$__po_arg" = "--config=" ]; then
    if [ ! -f "$__po_file" ] || [ ! -r "$__po_file" ]; then
      echo "parse_options.sh: config file '$__po_file' (given by --config) does not exist or is not readable" >&2
      exit 1
    fi
    # shellcheck disable=SC1090
    . "$__po_file"
  fi
  __po_i=$((__po_i + __po_step))
done

# Pass 2: apply the remaining options and shift them off "$@".
while [ "$#" -gt 0 ]; do
  case "$1" in
    --help | -h)
      if [ -n "${help_message:-}" ]; then
        printf '%s\n' "$help_message" >&2
      else
        echo "No help found." >&2
      fi
      exit 0
      ;;
    --)
      shift
      break
      ;;
    --*=*)
      __po_opt=${1%%=*}
      __po_val=${1#*=}
      shift
      ;;
    --*)
      __po_opt=$1
      if [ "$#" -lt 2 ]; then
        echo "parse_options.sh: option $__po_opt requires a value" >&2
        exit 1
      fi
      __po_val=$2
      shift 2
      ;;
    *) break ;;
  esac

  __po_name=${__po_opt#--}
  __po_name=${__po_name//-/_}
  # Already handled in pass 1.
  if [ "$__po_name" = config ]; then
    continue
  fi
  # Reject names that are not shell identifiers before any indirect expansion.
  if ! [[ "$__po_name" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || [ -z "${!__po_name+x}" ]; then
    echo "parse_options.sh: invalid option $__po_opt" >&2
    exit 1
  fi
  # A boolean stays boolean: catches e.g. "--use-gpu yes".
  case "${!__po_name}" in
    true | false)
      case "$__po_val" in
        true | false) ;;
        *)
          echo "parse_options.sh: option $__po_opt expects true or false, got '$__po_val'" >&2
          exit 1
          ;;
      esac
      ;;
  esac
  printf -v "$__po_name" '%s' "$__po_val"
done

unset __po_i __po_j __po_arg __po_file __po_step __po_opt __po_val __po_name
true
