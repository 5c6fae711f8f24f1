#!/usr/bin/env python3
"""A corpus as it ships (WebDataset tar shards, Hugging Face parquet files or save_to_disk
folders, Lhotse cut manifests, Lhotse Shar shards, NeMo tarred audio datasets) as a Kaldi data
dir, without copying audio: each wav.scp entry points into its shard or recording (README, Data
dir).

    import_corpus.py --format webdataset /data/emilia/EN/*.tar data/emilia_en
    import_corpus.py --format hf /data/mls_english/train data/mls_train
    import_corpus.py --format hf /data/cv_saved/train data/cv_train    # save_to_disk folder
    import_corpus.py --format lhotse /data/libriheavy/libriheavy_cuts_small.jsonl.gz data/small
    import_corpus.py --format shar /data/shar/train data/shar_train    # cuts.000000.jsonl.gz ...
    import_corpus.py --format nemo /data/nemo_tarred/train data/nemo_train  # audio_0.tar ...

A source is a file, a glob or a directory (searched for the format's files: a Shar directory's
cuts files, a NeMo dataset's tarred_audio_manifest.json, else its manifest_<N>.json)."""

import argparse
import sys

from speechdump import cli
from speechdump.corpora import FORMATS, import_corpus


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--format", required=True, choices=sorted(FORMATS))
    p.add_argument("sources", nargs="+", metavar="source")
    p.add_argument("data_dir")
    return p


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    counts = import_corpus(args.format, args.sources, args.data_dir)
    print(f"{args.data_dir}: {counts['utterances']} utterances, {counts['speakers']} speakers, "
          f"{counts['texts']} transcripts, {counts['durations']} durations")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
