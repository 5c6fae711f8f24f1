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
#   --config FILE   read FILE: one option per line, as "--name=value" (Kaldi's
#                   config files) or "name=value"; blank lines and comments
#                   ("#" at the start of a line or after a blank) are allowed;
#                   a value holding blanks is quoted ("..." or '...').  The
#                   file is read, never run: an unknown name, a malformed line
#                   or a value that would need the shell ($, `) is an error
#                   naming the file and line.  Config files are applied
#                   before all other options, so the command line wins over
#                   them wherever --config appears (as in Kaldi).
#   --help, -h      print $help_message to stderr and exit 0; a caller whose
#                   help depends on options given before --help (a recipe
#                   that runs only some stages of its template) defines a
#                   function print_help instead, which is called.
# Parsing stops at the first argument not starting with -- (or after --);
# the remaining arguments are left in "$@" of the caller.
#
# This file is sourced, so it shifts the caller's "$@" and must leave no
# traces: every helper variable and function is prefixed with __po_ and
# unset at the end.  It only uses constructs that are safe under
# `set -euo pipefail`.

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  echo "parse_options.sh: this file must be sourced from a bash script, not run" >&2
  exit 1
fi

# Sets option $1 (as written: --batch-seconds, --nj, batch_seconds) to $2
# after the checks every option gets; $3 prefixes the errors with where the
# option came from ("" on the command line, "<file> line <n>: " in a config).
__po_set() {
  local __po_n=${1#--}
  __po_n=${__po_n//-/_}
  # Reject names that are not shell identifiers before any indirect expansion.
  if ! [[ "$__po_n" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || [ -z "${!__po_n+x}" ]; then
    if [ -n "$3" ]; then
      echo "parse_options.sh: ${3}invalid option $1 (${0##*/} has no such option;" \
        "--help lists them)" >&2
    else
      echo "parse_options.sh: invalid option $1" >&2
    fi
    exit 1
  fi
  # A boolean stays boolean: catches e.g. "--use-gpu yes".
  case "${!__po_n}" in
    true | false)
      case "$2" in
        true | false) ;;
        *)
          echo "parse_options.sh: ${3}option $1 expects true or false, got '$2'" >&2
          exit 1
          ;;
      esac
      ;;
  esac
  printf -v "$__po_n" '%s' "$2"
}

# Applies the options of config file $1 (see --config above).
__po_read_config() {
  local __po_line __po_no=0 __po_where __po_opt __po_v
  while IFS= read -r __po_line || [ -n "$__po_line" ]; do
    __po_no=$((__po_no + 1))
    __po_where="$1 line $__po_no: "
    __po_line=${__po_line%$'\r'}
    [[ "$__po_line" =~ ^[[:space:]]*(#.*)?$ ]] && continue
    if ! [[ "$__po_line" =~ ^[[:space:]]*((--)?[A-Za-z_][A-Za-z0-9_-]*)=(.*)$ ]]; then
      echo "parse_options.sh: ${__po_where}expected --name=value or name=value," \
        "got '$__po_line'" >&2
      exit 1
    fi
    __po_opt=${BASH_REMATCH[1]}
    __po_v=${BASH_REMATCH[3]}
    if [[ "$__po_v" =~ ^\'([^\']*)\'[[:space:]]*([[:space:]]#.*)?$ ]]; then
      __po_v=${BASH_REMATCH[1]}  # single quotes: literal, as in the shell
    elif [[ "$__po_v" =~ ^\"([^\"]*)\"[[:space:]]*([[:space:]]#.*)?$ ]] \
        || [[ "$__po_v" =~ ^([^[:space:]\"\']*)[[:space:]]*([[:space:]]#.*)?$ ]]; then
      __po_v=${BASH_REMATCH[1]}
      if [[ "$__po_v" == *[\$\`]* ]]; then
        echo "parse_options.sh: ${__po_where}the value of $__po_opt ('$__po_v') would need" \
          "the shell to expand it; config files are read, not run: write the value itself" \
          "(or quote it with '...' to keep it literally)" >&2
        exit 1
      fi
    else
      echo "parse_options.sh: ${__po_where}cannot read the value of $__po_opt" \
        "('$__po_v'): quote a value that holds blanks or quotes, e.g." \
        "${__po_opt}=\"--layers 6\"" >&2
      exit 1
    fi
    if [ "${__po_opt#--}" = config ]; then
      echo "parse_options.sh: ${__po_where}a config file cannot name another (--config)" >&2
      exit 1
    fi
    __po_set "$__po_opt" "$__po_v" "$__po_where"
  done < "$1"
}

# Pass 1: read every --config file first, walking the same option grammar
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
    __po_read_config "$__po_file"
  fi
  __po_i=$((__po_i + __po_step))
done

# Pass 2: apply the remaining options and shift them off "$@".
while [ "$#" -gt 0 ]; do
  case "$1" in
    --help | -h)
      if declare -F print_help >/dev/null; then
        print_help >&2
      elif [ -n "${help_message:-}" ]; then
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
  __po_set "$__po_opt" "$__po_val" ""
done

unset __po_i __po_j __po_arg __po_file __po_step __po_opt __po_val __po_name
unset -f __po_set __po_read_config
true
