#!/usr/bin/env python3
"""Pre-flight of an extraction stage, run before any job is split or launched: the toolkit's
options against its declarations, the model path against the toolkit's layout (no weights are
loaded), --dtype/--compress against its streams, --precision against the device and the
streams, --vad and its thresholds (trimming to speech: the speaker stage only), and that the
stage can take those streams.
Prints the streams the jobs will write; on a problem, one ERROR line and exit 1. With
--fingerprint_to, also writes the model's fingerprint (each file's size and SHA-256) there: the
jobs take it instead of hashing the model each."""

import argparse
import sys

from speechdump import cli, vad

# What each stage can take: (check, what the stage needs, in words).
STAGES = {
    "speaker": (lambda streams: len(streams) == 1 and streams[0].shape == "vector"
                and streams[0].kind == "float", "one float vector per utterance"),
    "features": (lambda streams: True, "any streams"),
}


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--stage", required=True, choices=sorted(STAGES),
                   help="the stage that will run the jobs")
    cli.add_general_options(p)
    vad.add_trim_options(p)
    p.add_argument("--fingerprint_to", default=None, metavar="FILE",
                   help="write the model's fingerprint to FILE")
    return p


def describe(stream) -> str:
    shape = {"vector": "[dim]", "frames": "[frames, dim]", "tokens": "[frames]"}[stream.shape]
    dim = f", dim {stream.dim}" if stream.dim else ""
    return f"{stream.name or '(one stream)'}: {stream.kind} {shape}{dim}"


def main(argv=None) -> int:
    from speechdump.device import check_cpu_layout
    from speechdump.errors import OptionError
    from speechdump.extractors import check, get_class
    from speechdump.extractors.base import check_storage
    from speechdump.precision import check as check_precision
    from speechdump.provenance import model_fingerprint, write_fingerprint

    args, given = cli.parse_extraction_args(get_parser(), argv)
    trim = vad.trim_settings(args)
    _, streams = check(args.toolkit, args.model, given)
    check_storage(streams, args.dtype, args.compress)
    check_precision(args.precision, args.device, streams, args.toolkit)
    check_cpu_layout(args.cpu_layout, args.device, get_class(args.toolkit))
    accepts, needs = STAGES[args.stage]
    if not accepts(streams):
        raise OptionError(f"the {args.stage} stage needs {needs}; --toolkit {args.toolkit} with "
                          f"these options writes {'; '.join(describe(s) for s in streams)}")
    if trim is not None and args.stage != "speaker":
        # Frames keep the utterance's time axis (and a pooled vector of the features stage is
        # a feature of the whole utterance): trimming belongs to the speaker stage.
        raise OptionError(f"--vad true applies to the speaker stage (scripts/extract_spk_embed.sh) "
                          f"only, not the {args.stage} stage: for features of the speech "
                          "alone, run scripts/compute_vad.sh and extract from its data dir of "
                          "the regions")
    vad.check_trim(trim, streams, args.toolkit)
    if args.fingerprint_to:
        files = get_class(args.toolkit).model_files(args.model)
        write_fingerprint(args.fingerprint_to, model_fingerprint(files))
    print(f"{args.toolkit}: {'; '.join(describe(s) for s in streams)}"
          + (f"; --vad true: each utterance cut to its speech (Silero VAD, "
             f"{vad.describe_settings(trim)})" if trim is not None else ""))
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
