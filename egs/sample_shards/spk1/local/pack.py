#!/usr/bin/env python3
"""Packs a Kaldi data dir's recordings (the shipped samples/real_speech) into the formats corpora
ship as, each written with its own writer, every audio file stored with its bytes as they are:

  wds_tar   WebDataset tar shards (tarfile, as webdataset's TarWriter lays them out):
            shard-00000N.tar holding <key>.<ext> and <key>.json ({"speaker", "duration"})
  wds_tgz   the same, gzipped: shard-00000N.tar.gz
  parquet   Hugging Face parquet files (pyarrow, the layout `datasets` writes): columns id,
            audio (struct of bytes and path), speaker_id, duration; the features in the schema's
            "huggingface" metadata; a few rows per row group
  hf_arrow  a Hugging Face save_to_disk folder (pyarrow): data-0000k-of-0000N.arrow Arrow IPC
            streams, dataset_info.json and state.json
  shar      Lhotse Shar: cuts.00000N.jsonl.gz beside recording.00000N.tar. The cuts go through
            Lhotse's SharWriter; the recording shards through Lhotse's Shar TarWriter, with
            <cut id>.<ext> the file's own bytes and <cut id>.json its Shar placeholder recording
            (the members SharWriter's audio writer writes, which decodes the audio and encodes it
            again: 24-bit FLAC would be stored at 16 bits and MP3 decoded and re-quantized)
  nemo      a NeMo tarred audio dataset (tarfile, the layout of NeMo's
            convert_to_tarred_audio_dataset.py): audio_N.tar, tarred_audio_manifest.json (each
            line with its shard_id) and sharded_manifests/manifest_N.json

No transcripts are packed (see local/data.sh). Each format is written to a temporary folder and
renamed to <out_dir>/<format> when complete, so a rerun replaces it whole.
"""

import argparse
import io
import json
import os
import shutil
import sys
import tarfile

FORMATS = ("wds_tar", "wds_tgz", "parquet", "hf_arrow", "shar", "nemo")


def read_table(path):
    with open(path, encoding="utf-8") as f:
        return dict(line.rstrip("\n").split(maxsplit=1) for line in f if line.strip())


def read_corpus(data_dir):
    """[(utt, audio path, speaker, duration)] of a data dir, in wav.scp order. Entries must be
    plain files: the packs hold their bytes."""
    wav = read_table(os.path.join(data_dir, "wav.scp"))
    utt2spk = read_table(os.path.join(data_dir, "utt2spk"))
    utt2dur = read_table(os.path.join(data_dir, "utt2dur"))
    items = []
    for utt, entry in wav.items():
        path = entry if os.path.isabs(entry) else os.path.join(data_dir, entry)
        if not os.path.isfile(path):
            sys.exit(f"pack.py: {data_dir}/wav.scp: '{utt}' is not a file ({entry}); the packs "
                     "hold the files' bytes")
        if utt not in utt2spk or utt not in utt2dur:
            sys.exit(f"pack.py: '{utt}' of {data_dir}/wav.scp has no line in utt2spk or utt2dur")
        items.append((utt, path, utt2spk[utt], float(utt2dur[utt])))
    return items


def ext(path):
    return os.path.splitext(path)[1]  # ".flac", ".wav", ".mp3"


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def shards(items, per_shard):
    return [items[n:n + per_shard] for n in range(0, len(items), per_shard)]


def add_member(tar, name, data, mtime):
    """A member as webdataset's TarWriter adds one (read-only, owner "bigdata")."""
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = mtime
    info.mode = 0o444
    info.uname = info.gname = "bigdata"
    tar.addfile(info, io.BytesIO(data))


def write_json_lines(path, lines):
    with open(path, "w", encoding="utf-8") as f:
        for line in lines:
            f.write(json.dumps(line, ensure_ascii=False) + "\n")


def pack_webdataset(items, dest, per_shard, compressed):
    for n, shard in enumerate(shards(items, per_shard)):
        name = f"shard-{n:06d}.tar{'.gz' if compressed else ''}"
        with tarfile.open(os.path.join(dest, name), "w:gz" if compressed else "w") as tar:
            for utt, path, speaker, duration in shard:
                mtime = int(os.stat(path).st_mtime)
                add_member(tar, f"{utt}{ext(path)}", read_bytes(path), mtime)
                meta = json.dumps({"speaker": speaker, "duration": duration}).encode()
                add_member(tar, f"{utt}.json", meta, mtime)


def hf_schema(pa):
    """The table schema `datasets` writes for an Audio column (decode=True) beside strings."""
    features = {"id": {"dtype": "string", "_type": "Value"}, "audio": {"_type": "Audio"},
                "speaker_id": {"dtype": "string", "_type": "Value"},
                "duration": {"dtype": "float64", "_type": "Value"}}
    schema = pa.schema([("id", pa.string()),
                        ("audio", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                        ("speaker_id", pa.string()), ("duration", pa.float64())],
                       metadata={"huggingface": json.dumps({"info": {"features": features}})})
    return schema, features


def hf_table(pa, schema, part):
    return pa.table({"id": [utt for utt, *_ in part],
                     "audio": [{"bytes": read_bytes(path), "path": os.path.basename(path)}
                               for _, path, *_ in part],
                     "speaker_id": [speaker for _, _, speaker, _ in part],
                     "duration": [duration for *_, duration in part]}, schema=schema)


def split_files(items, files):
    per_file = -(-len(items) // files)
    return [items[k * per_file:(k + 1) * per_file] for k in range(files)]


def pack_parquet(items, dest, per_shard, files=2):
    """train-0000k-of-0000N.parquet (the names `datasets` gives a split's files), row groups of
    ``per_shard`` rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema, _ = hf_schema(pa)
    for k, part in enumerate(split_files(items, files)):
        pq.write_table(hf_table(pa, schema, part),
                       os.path.join(dest, f"train-{k:05d}-of-{files:05d}.parquet"),
                       row_group_size=per_shard)


def pack_hf_arrow(items, dest, per_shard, files=2):
    """What Dataset.save_to_disk writes: Arrow IPC streams of record batches of ``per_shard``
    rows, dataset_info.json, and state.json listing the data files."""
    import pyarrow as pa

    schema, features = hf_schema(pa)
    names = []
    for k, part in enumerate(split_files(items, files)):
        names.append(f"data-{k:05d}-of-{files:05d}.arrow")
        with pa.OSFile(os.path.join(dest, names[-1]), "wb") as sink:
            with pa.ipc.new_stream(sink, schema) as writer:
                for batch in hf_table(pa, schema, part).to_batches(max_chunksize=per_shard):
                    writer.write_batch(batch)
    with open(os.path.join(dest, "dataset_info.json"), "w", encoding="utf-8") as f:
        json.dump({"features": features}, f)
    with open(os.path.join(dest, "state.json"), "w", encoding="utf-8") as f:
        json.dump({"_data_files": [{"filename": name} for name in names],
                   "_fingerprint": "0" * 16, "_format_columns": None, "_format_kwargs": {},
                   "_format_type": None, "_output_all_columns": False, "_split": None}, f)


def pack_shar(items, dest, per_shard):
    """Lhotse Shar: one cut per recording, a supervision with its speaker. SharWriter writes the
    cuts shards; the recording shards get what SharWriter's AudioTarWriter writes per cut
    (``<cut id>.<format>`` then ``<cut id>.json``, the placeholder recording, not counted towards
    the shard size), with the file's own bytes as the audio member."""
    from lhotse import Recording, SupervisionSegment
    from lhotse.shar import SharWriter
    from lhotse.shar.utils import to_shar_placeholder
    from lhotse.shar.writers.tar import TarWriter
    from lhotse.utils import fastcopy

    with SharWriter(dest, fields={}, shard_size=per_shard, warn_unused_fields=False) as cuts, \
            TarWriter(os.path.join(dest, "recording.%06d.tar"), shard_size=per_shard) as audio:
        for utt, path, speaker, _ in items:
            cut = Recording.from_file(path, recording_id=utt).to_cut()
            cut.supervisions = [SupervisionSegment(id=utt, recording_id=utt, start=0.0,
                                                   duration=cut.duration, speaker=speaker)]
            recording = to_shar_placeholder(cut.recording, cut)
            audio.write(f"{cut.id}{ext(path)}", io.BytesIO(read_bytes(path)))
            audio.write(f"{cut.id}.json", io.BytesIO(json.dumps(recording.to_dict()).encode()),
                        count=False)
            cuts.write(fastcopy(cut, recording=recording))


def pack_nemo(items, dest, per_shard):
    os.makedirs(os.path.join(dest, "sharded_manifests"))
    every = []
    for shard_id, shard in enumerate(shards(items, per_shard)):
        lines = []
        with tarfile.open(os.path.join(dest, f"audio_{shard_id}.tar"), "w") as tar:
            for utt, path, speaker, duration in shard:
                name = f"{utt}{ext(path)}"
                add_member(tar, name, read_bytes(path), int(os.stat(path).st_mtime))
                lines.append({"audio_filepath": name, "duration": duration, "text": "",
                              "speaker": speaker, "shard_id": shard_id})
        write_json_lines(os.path.join(dest, "sharded_manifests", f"manifest_{shard_id}.json"),
                         lines)
        every += lines
    write_json_lines(os.path.join(dest, "tarred_audio_manifest.json"), every)


PACKERS = {"wds_tar": lambda i, d, n: pack_webdataset(i, d, n, compressed=False),
           "wds_tgz": lambda i, d, n: pack_webdataset(i, d, n, compressed=True),
           "parquet": pack_parquet, "hf_arrow": pack_hf_arrow, "shar": pack_shar,
           "nemo": pack_nemo}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--formats", default=" ".join(FORMATS),
                   help=f"formats to write, blank-separated (default: all: {' '.join(FORMATS)})")
    p.add_argument("--per_shard", type=int, default=4,
                   help="utterances per shard (tar shards) or per row group / record batch")
    p.add_argument("data_dir", help="Kaldi data dir whose wav.scp entries are audio files")
    p.add_argument("out_dir", help="<out_dir>/<format> is written for each format")
    args = p.parse_args(argv)
    formats = args.formats.split()
    unknown = [f for f in formats if f not in PACKERS]
    if unknown or not formats:
        p.error(f"--formats: unknown {' '.join(unknown) or '(none given)'}; "
                f"choose from {' '.join(FORMATS)}")
    if args.per_shard < 1:
        p.error("--per_shard must be at least 1")
    items = read_corpus(args.data_dir)
    os.makedirs(args.out_dir, exist_ok=True)
    for name in formats:
        final = os.path.join(args.out_dir, name)
        tmp = os.path.join(args.out_dir, f".{name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        PACKERS[name](items, tmp, args.per_shard)
        shutil.rmtree(final, ignore_errors=True)
        os.rename(tmp, final)
        files = [os.path.join(r, f) for r, _, fs in os.walk(final) for f in fs]
        size = sum(os.path.getsize(f) for f in files)
        print(f"pack.py: {name}: {len(items)} utterances in {final} ({len(files)} files, "
              f"{size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
