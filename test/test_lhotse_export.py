"""Lhotse manifests over our arks (speechdump.lhotse_export, pyscripts/export_lhotse.py): Lhotse
itself loads every cut's features and custom fields bit for bit, on fbank, tokens and
utterance vectors of the real speech samples, whole recordings and segments."""

import dataclasses
import subprocess
import sys

import numpy as np
import pytest
import torch
import torchaudio

lhotse = pytest.importorskip("lhotse")

from conftest import REPO, make_data_dir, make_segments_data_dir, read_pairs  # noqa: E402
from speechdump.audio import ResamplerCache, load_audio  # noqa: E402
from speechdump.data import read_utterances  # noqa: E402
from speechdump.extractors.base import FLOAT, FRAMES, INT, TOKENS, VECTOR, Stream  # noqa: E402
from speechdump.job import write_merged_record  # noqa: E402
from speechdump.kaldi_io import ArkScpWriter  # noqa: E402
from speechdump.lhotse_export import KALDI_STORAGE, LhotseExportError, export  # noqa: E402

EXPORT = [sys.executable, str(REPO / "pyscripts" / "export_lhotse.py")]


def write_stage(out, streams, arrays, tag):
    """A stage output: one ark/scp per stream (kaldiio records, as the stages write them, NPY
    for float16) and meta.json. ``arrays``: {stem: {utt: array}}, in the utterances' order."""
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for stem, stream in streams.items():
        with ArkScpWriter(str(out / f"{stem}.ark"), str(out / f"{stem}.scp")) as writer:
            for utt, array in arrays[stem].items():
                writer.write(utt, array)
        records.append(dict(dataclasses.asdict(stream), stem=stem))
    write_merged_record(str(out), {"tag": tag, "config": {"tag": tag}, "streams": records})


def extract(data_dir, out):
    """Real outputs of every utterance of ``data_dir``: fbank at 10 ms (features), tokens at
    20 ms (the loudest band of every other frame), a float16 copy of the fbank, and an
    utterance vector (the fbank mean), split over two stage outputs."""
    resamplers = ResamplerCache()
    arrays = {name: {} for name in ("fbank", "fbank16", "tokens", "embed")}
    for utt in read_utterances(str(data_dir / "wav.scp"),
                               str(data_dir / "segments") if (data_dir / "segments").exists()
                               else None):
        wave = load_audio(utt, 16000, resamplers)
        fbank = torchaudio.compliance.kaldi.fbank(
            torch.from_numpy(wave).unsqueeze(0) * 32768, num_mel_bins=40, dither=0.0,
            sample_frequency=16000).numpy()
        arrays["fbank"][utt.utt_id] = fbank
        arrays["fbank16"][utt.utt_id] = fbank.astype(np.float16)
        arrays["tokens"][utt.utt_id] = fbank[::2].argmax(axis=1).astype(np.int32)
        arrays["embed"][utt.utt_id] = fbank.mean(axis=0)
    write_stage(out / "fbank", {
        "fbank": Stream(kind=FLOAT, shape=FRAMES, frame_shift=0.01, dim=40),
        "fbank16": Stream(name="16", kind=FLOAT, shape=FRAMES, frame_shift=0.01, dim=40)},
        arrays, "fbank")
    write_stage(out / "units", {
        "tokens": Stream(kind=INT, shape=TOKENS, frame_shift=0.02),
        "embed": Stream(name="embed", kind=FLOAT, shape=VECTOR, dim=40)}, arrays, "units")
    return arrays


def check_cuts(cuts_path, arrays, features="fbank"):
    cuts = lhotse.CutSet.from_file(str(cuts_path))
    assert [c.id for c in cuts] == list(arrays["fbank"])
    others = [name for name in arrays if name != features]
    for cut in cuts:
        np.testing.assert_array_equal(cut.load_features(), arrays[features][cut.id])
        for name in others:
            stored = arrays[name][cut.id]
            loaded = cut.load_custom(name)
            assert loaded.dtype == stored.dtype
            np.testing.assert_array_equal(loaded, stored)
    return cuts


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    base = tmp_path_factory.mktemp("lhotse_whole")
    data = make_data_dir(base / "data")
    return base, data, extract(data, base / "dump")


@pytest.fixture(scope="module")
def segmented(tmp_path_factory):
    base = tmp_path_factory.mktemp("lhotse_segments")
    data = make_segments_data_dir(base / "data", piece_seconds=1.3)
    return base, data, extract(data, base / "dump")


def test_whole_recordings_load_bit_for_bit(whole):
    base, data, arrays = whole
    proc = subprocess.run(EXPORT + [str(data), str(base / "manifests"), str(base / "dump/fbank"),
                                    str(base / "dump/units")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    cuts = check_cuts(base / "manifests" / "cuts.jsonl.gz", arrays)
    texts = dict(read_pairs(data / "text"))
    speakers = dict(read_pairs(data / "utt2spk"))
    durations = {utt: float(d) for utt, d in read_pairs(data / "utt2dur")}
    for cut in cuts:
        assert cut.features.storage_type == KALDI_STORAGE  # Lhotse's own Kaldi reader
        assert cut.features.storage_path == str(base / "dump/fbank/fbank.scp")
        assert cut.features.frame_shift == 0.01 and cut.num_features == 40
        assert cut.tokens.frame_shift == 0.02 and cut.embed.shape == [40]
        assert cut.supervisions[0].text == texts.get(cut.id)
        assert cut.supervisions[0].speaker == speakers[cut.id]
        # The fbank frames' span: within 2.5 frames of the decoded audio (utt2dur of the mp3
        # samples counts the encoder's padding too).
        assert cut.duration == pytest.approx(len(arrays["fbank"][cut.id]) * 0.01)
        assert cut.recording.duration - 0.03 < cut.duration <= durations[cut.id]
    recordings = lhotse.RecordingSet.from_file(str(base / "manifests" / "recordings.jsonl.gz"))
    assert len(recordings) == len(arrays["fbank"])
    assert [r.id for r in recordings] == [c.recording_id for c in cuts]
    assert all(r.sampling_rate > 0 for r in recordings)


def test_segments_become_cuts_with_offsets(segmented):
    base, data, arrays = segmented
    paths = export(str(data), [str(base / "dump/fbank"), str(base / "dump/units")],
                   str(base / "m"), prefix="train_")
    assert paths["cuts"].endswith("train_cuts.jsonl.gz")
    cuts = check_cuts(paths["cuts"], arrays)
    segments = {utt: (reco, float(s), float(e)) for utt, rest in read_pairs(data / "segments")
                for reco, s, e in [rest.split()]}
    for cut in cuts:
        reco, start, end = segments[cut.id]
        assert cut.recording_id == reco and cut.start == pytest.approx(start)
        assert cut.supervisions[0].start == 0 and cut.supervisions[0].duration == \
            pytest.approx(end - start)
        rate = cut.recording.sampling_rate
        assert cut.load_audio().shape[1] == pytest.approx(cut.duration * rate, abs=2)
        assert cut.num_frames == len(arrays["fbank"][cut.id])


def test_float16_features_through_our_reader(segmented):
    base, data, arrays = segmented
    paths = export(str(data), [str(base / "dump/fbank"), str(base / "dump/units")],
                   str(base / "m16"), features="fbank16")
    cuts = check_cuts(paths["cuts"], arrays, features="fbank16")
    assert cuts[0].features.storage_type == "speechdump_ark"
    with pytest.raises(LhotseExportError, match="--features embed: not a frame-level"):
        export(str(data), [str(base / "dump/units")], str(base / "x"), features="embed")


def test_sampler_and_dataset_iterate(segmented):
    from lhotse.dataset import DynamicBucketingSampler
    from lhotse.dataset.collation import collate_custom_field, collate_features

    base, data, arrays = segmented
    paths = export(str(data), [str(base / "dump/fbank"), str(base / "dump/units")],
                   str(base / "ms"))
    cuts = lhotse.CutSet.from_file(paths["cuts"])

    class Batches(torch.utils.data.Dataset):
        def __getitem__(self, batch):
            feats, lengths = collate_features(batch)
            tokens, token_lengths = collate_custom_field(batch, "tokens", pad_value=-1)
            return [c.id for c in batch], feats, lengths, tokens, token_lengths

    sampler = DynamicBucketingSampler(cuts, max_duration=8.0, num_buckets=2, shuffle=True,
                                      seed=0)
    loader = torch.utils.data.DataLoader(Batches(), sampler=sampler, batch_size=None)
    seen = set()
    for ids, feats, lengths, tokens, token_lengths in loader:
        for i, utt in enumerate(ids):
            np.testing.assert_array_equal(feats[i, :lengths[i]].numpy(), arrays["fbank"][utt])
            np.testing.assert_array_equal(tokens[i, :token_lengths[i]].numpy(),
                                          arrays["tokens"][utt])
            seen.add(utt)
    assert seen == set(arrays["fbank"])


def test_tables_become_custom_fields(whole):
    """--tables DIR: each DIR/utt2<name> (not utt2dur, utt2spk) is the custom field <name>."""
    base, data, arrays = whole
    tables = base / "quality"
    tables.mkdir(exist_ok=True)
    utts = list(arrays["fbank"])
    snr = {utt: round(3.5 + i, 2) for i, utt in enumerate(utts)}
    (tables / "utt2snr_db").write_text("".join(f"{u} {snr[u]:.2f}\n" for u in utts))
    (tables / "utt2label").write_text("".join(f"{u} clean\n" for u in utts))
    (tables / "utt2dur").write_text("".join(f"{u} 99\n" for u in utts))
    proc = subprocess.run(EXPORT + ["--tables", str(tables), str(data), str(base / "mt"),
                                    str(base / "dump/fbank"), str(base / "dump/units")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    cuts = check_cuts(base / "mt" / "cuts.jsonl.gz", arrays)
    for cut in cuts:
        assert cut.snr_db == snr[cut.id] and cut.label == "clean"
        assert "dur" not in cut.custom and cut.duration < 99
    # a table that misses an utterance, or whose name is a stream's, is refused by name
    (tables / "utt2snr_db").write_text("".join(f"{u} 1\n" for u in utts[1:]))
    with pytest.raises(LhotseExportError, match=f"utt2snr_db has no line for utterance "
                                                f"'{utts[0]}'"):
        export(str(data), [str(base / "dump/fbank")], str(base / "mt2"), tables=str(tables))
    (tables / "utt2snr_db").unlink()
    (tables / "utt2embed").write_text("".join(f"{u} 1\n" for u in utts))
    with pytest.raises(LhotseExportError, match="field 'embed' is also a stream's name"):
        export(str(data), [str(base / "dump/units")], str(base / "mt3"), tables=str(tables))
