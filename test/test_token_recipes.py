"""The sample ssl1 and tok1 recipes end to end: features -> k-means -> tokens, in --nj jobs."""

import json
import subprocess

import kaldiio
import numpy as np

import build_ssl_model
from conftest import REPO, read_pairs

SAMPLE = REPO / "egs" / "sample_speakers"
TEXT_IDS = [k for k, _ in read_pairs(REPO / "samples" / "real_speech" / "text")]


def run_recipe(name, args, tmp_path, env):
    proc = subprocess.run(["./run.sh", "--datadir", str(tmp_path / "data"), "--dumpdir",
                           str(tmp_path / "dump"), "--expdir", str(tmp_path / "exp"),
                           *map(str, args)], cwd=SAMPLE / name, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_tok1_fbank_kmeans_tokens(tmp_path, stage_env):
    run_recipe("tok1", ["--nj", 2, "--n_clusters", 16], tmp_path, stage_env)
    feats = dict(kaldiio.load_scp_sequential(str(tmp_path / "dump/fbank/sample/fbank.scp")))
    out = tmp_path / "dump" / "tokens_fbank_16" / "sample"
    lines = [line.split() for line in (out / "tokens").read_text().splitlines()]
    assert [line[0] for line in lines] == TEXT_IDS  # aligned with the data dir's text
    vectors = kaldiio.load_scp_sequential(str(out / "tokens.scp"))
    for (utt, *tokens), (key, vector) in zip(lines, vectors):
        assert key == utt and vector.dtype == np.int32
        assert [int(t) for t in tokens] == vector.tolist()
        assert len(tokens) == len(feats[utt]) and 0 <= vector.min() and vector.max() < 16
    # The tokens keep the frame shift of the features they were made of (the feature stage's
    # meta.json), as the record of their own stage.
    fbank = json.loads((tmp_path / "dump/fbank/sample/meta.json").read_text())
    assert [s["frame_shift"] for s in fbank["streams"]] == [0.01]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["streams"] == [{"stem": "tokens", "name": "", "kind": "int", "shape": "tokens",
                                "frame_shift": 0.01, "dim": None, "exact": False}]
    assert meta["utterances"] == len(TEXT_IDS)


def test_ssl1_every_layer_of_a_local_model(tmp_path, stage_env):
    model = build_ssl_model.build(tmp_path / "hubert", kind="hubert", norm="group")
    run_recipe("ssl1", ["--model", model, "--nj", 2], tmp_path, stage_env)
    out = tmp_path / "dump" / "ssl" / "sample"
    layers = sorted(p.name for p in out.glob("ssl_layer*.scp"))
    assert layers and all((out / name).stat().st_size > 0 for name in layers)
    frames = dict(read_pairs(out / "utt2num_frames"))
    assert list(frames) == TEXT_IDS
    for name in layers:
        for utt, matrix in kaldiio.load_scp_sequential(str(out / name)):
            assert matrix.shape[0] == int(frames[utt])
