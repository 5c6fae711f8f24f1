"""scripts/extract_ssl_feats.sh end to end: aligned frame-level outputs, --nj invariance."""

import kaldiio
import numpy as np
import pytest

from conftest import assert_equal_to_rounding, make_data_dir, read_pairs, run_feats_stage

SUBSET = {"arctic-aew-a0001", "jfk-inaugural1961", "ljspeech-lj-002-0020", "vctk-p225-003",
          "vctk-p238-165", "vctk-p240-rtvc00000"}  # 16-48 kHz, stereo, MP3; 1.5-11 s


def load(scp):
    return list(kaldiio.load_scp_sequential(str(scp)))


@pytest.mark.kernels
def test_fbank_nj_invariance_and_frame_counts(tmp_path, stage_env):
    data = make_data_dir(tmp_path / "data", keep=SUBSET)
    text_ids = [k for k, _ in read_pairs(data / "text")]
    runs = {}
    for nj in (1, 3):
        out = tmp_path / f"nj{nj}"
        proc = run_feats_stage(["--toolkit", "fbank", "--extractor_opts", "--num_mel_bins 40",
                                "--nj", nj, data, out],
                               stage_env)
        assert f"{out}/feats.scp: {len(text_ids)} matrices of dimension 40" in proc.stdout
        runs[nj] = load(out / "feats.scp")
        frames = dict(read_pairs(out / "utt2num_frames"))
        assert list(frames) == text_ids
        for utt, matrix in runs[nj]:
            seconds = float(dict(read_pairs(out / "utt2dur"))[utt])
            assert matrix.shape == (int(frames[utt]), 40)
            assert int(frames[utt]) == 1 + (round(seconds * 16000) - 400) // 160
    assert [k for k, _ in runs[1]] == [k for k, _ in runs[3]] == text_ids
    # Bit for bit: features are computed per utterance, on one thread (passes) at any --nj.
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(runs[1], runs[3]))


def test_mfcc_options_and_float16_storage(tmp_path, stage_env):
    data = make_data_dir(tmp_path / "data", keep=SUBSET)
    out = tmp_path / "mfcc"
    run_feats_stage(["--toolkit", "mfcc", "--extractor_opts", "--num_ceps 20 --num_mel_bins 30",
                     "--dtype", "float16", "--tag", "mfcc20", "--nj", 2, data, out], stage_env)
    matrices = load(out / "mfcc20.scp")
    assert all(m.shape[1] == 20 and m.dtype == np.float16 for _, m in matrices)


def test_a_frame_count_that_disagrees_with_the_ark_is_caught(tmp_path, stage_env):
    data = make_data_dir(tmp_path / "data", keep=SUBSET)
    out = tmp_path / "out"
    run_feats_stage(["--toolkit", "fbank", "--nj", 2, data, out], stage_env)
    lines = (out / "split2" / "utt2num_frames.1").read_text().splitlines()
    key, count = lines[0].split()
    lines[0] = f"{key} {int(count) + 1}"
    (out / "split2" / "utt2num_frames.1").write_text("\n".join(lines) + "\n")
    proc = run_feats_stage(["--toolkit", "fbank", "--nj", 2, data, out], stage_env, check=False)
    assert proc.returncode != 0  # a rerun skips the done jobs, then the merge checks again
    assert f"'{key}' has {count} frames, utt2num_frames says {int(count) + 1}" in proc.stderr


def test_unknown_option_for_the_toolkit_is_named(tmp_path, stage_env):
    data = make_data_dir(tmp_path / "data", keep=SUBSET)
    proc = run_feats_stage(["--toolkit", "fbank", "--model", "/some/model", "--nj", 1, data,
                            tmp_path / "out"], stage_env, check=False)
    assert proc.returncode != 0 and "fbank takes no model" in proc.stderr
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_kaldi_compression_is_lossy_within_its_documented_bound(tmp_path, stage_env):
    data = make_data_dir(tmp_path / "data", keep=SUBSET)
    for compress in ("false", "true"):
        run_feats_stage(["--toolkit", "fbank", "--compress", compress, "--nj", 2, data,
                         tmp_path / compress], stage_env)
    exact, packed = load(tmp_path / "false" / "feats.scp"), load(tmp_path / "true" / "feats.scp")
    worst = max(np.abs(a - b).max() / (a.max() - a.min()) for (_, a), (_, b) in zip(exact, packed))
    print(f"\nKaldi compression of fbank: max abs error / value range {worst:.2e}")
    assert 0 < worst < 1e-2  # measured 5.4e-3 on these samples (8 bits per column)
    assert (tmp_path / "true" / "split2" / "feats.1.ark").stat().st_size < \
        (tmp_path / "false" / "split2" / "feats.1.ark").stat().st_size / 2


@pytest.mark.kernels
def test_ssl_layers_nj_invariance(tmp_path, stage_env):
    import build_ssl_model

    model = build_ssl_model.build(tmp_path / "wavlm", kind="wavlm", norm="layer")
    data = make_data_dir(tmp_path / "data", keep=SUBSET)
    runs = {}
    for nj in (1, 3):
        out = tmp_path / f"nj{nj}"
        run_feats_stage(["--toolkit", "ssl", "--model", model, "--extractor_opts", "--layers 0,2",
                         "--nj", nj,
                         data, out], stage_env)
        runs[nj] = {layer: load(out / f"feats_layer{layer}.scp") for layer in (0, 2)}
        frames = dict(read_pairs(out / "utt2num_frames"))
        assert all(m.shape[0] == int(frames[u]) for u, m in runs[nj][2])
    for layer in (0, 2):
        assert_equal_to_rounding(dict(runs[3][layer]), dict(runs[1][layer]),
                                 "the jobs' sort windows follow the split, so --nj 3 pads other "
                                 "batches than --nj 1, and products round by their shapes")
