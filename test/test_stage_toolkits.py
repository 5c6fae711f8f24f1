"""Every speaker toolkit through scripts/extract_spk_embed.sh: aligned output, --nj invariance."""

import kaldiio
import numpy as np
import pytest

import build_espnet_model
import build_speechbrain_model
from conftest import assert_equal_to_rounding, make_data_dir, run_stage

SUBSET = {"arctic-aew-a0001", "arctic-aew-a0003", "ljspeech-lj-002-0020", "vctk-p225-003",
          "vctk-p226-008", "vctk-p238-165"}  # 5 speakers, 3 rates, 1.5-6.8 s


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {
        "speechbrain": build_speechbrain_model.build(root / "ecapa", kind="ecapa"),
        "espnet": build_espnet_model.build(root / "espnet_ecapa", encoder="ecapa_tdnn"),
        "rawnet": build_espnet_model.build(root / "rawnet3", encoder="rawnet3"),
    }


@pytest.mark.kernels
@pytest.mark.parametrize("toolkit", ["speechbrain", "espnet", "rawnet"])
def test_toolkit_through_the_stage(tmp_path, stage_env, models, toolkit):
    data = make_data_dir(tmp_path / "data", keep=SUBSET)
    outputs = {}
    for nj in (1, 3):
        out = tmp_path / f"nj{nj}"
        proc = run_stage(["--nj", nj, "--toolkit", toolkit, "--model", models[toolkit],
                          "--batch_seconds", 30, data, out], stage_env)
        assert f"{toolkit}: {len(SUBSET)} utterances, 5 speakers" in proc.stdout
        outputs[nj] = [list(kaldiio.load_scp_sequential(str(out / name)))
                       for name in (f"{toolkit}.scp", f"spk_{toolkit}.scp")]
    utts, spks = outputs[1]
    assert [k for k, _ in utts] == sorted(SUBSET)
    assert len({v.shape for _, v in utts}) == 1 and all(np.isfinite(v).all() for _, v in utts)
    assert len(spks) == 5
    for one, three in zip(outputs[1], outputs[3]):
        assert_equal_to_rounding(dict(three), dict(one),
                                 "intra_op jobs on 2 torch threads (--nj 1) and on 1 (--nj 3)")
