"""On a CUDA device (skipped without one): the GPU paths give what the CPU paths give.

On a GPU the extractors batch padded utterances by default, and cuDNN's TF32 convolutions once
made such batches differ from each utterance alone by 1e-2 of the hidden states' scale; these
tests hold every GPU path to the CPU's float32 results, through the engine and the stage.
"""

import kaldiio
import numpy as np
import pytest
import torch
import torchaudio
from transformers import AutoFeatureExtractor, AutoModel

import build_codec_models
import build_hf_models
import build_speechbrain_model
import build_ssl_model
from conftest import engine_outputs, make_data_dir, run_feats_stage, run_stage
from speechdump.audio import ResamplerCache, load_audio
from speechdump.extractors import load_extractor

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")

SUBSET = {"arctic-aew-a0001", "arctic-aew-a0003", "ljspeech-lj-002-0020", "vctk-p225-003",
          "vctk-p226-008", "vctk-p238-165", "jfk-inaugural1961"}  # 6 speakers, 4 rates


def worst_relative(got: dict, expected: dict) -> float:
    """Largest |difference| over all items, relative to each array's largest |value|."""
    assert got.keys() == expected.keys()
    return max(float(np.abs(got[k] - v).max() / np.abs(v).max()) for k, v in expected.items())


@pytest.mark.parametrize("source", [48000, 44100, 22050, 8000])
@pytest.mark.parametrize("dtype, atol", [(torch.float32, 2e-6), (torch.float64, 1e-12)])
def test_resampler_on_the_gpu_is_torchaudios(waves, source, dtype, atol):
    wave = torch.from_numpy(waves["vctk-p225-003"]).to(dtype)
    expected = torchaudio.functional.resample(wave, source, 16000, **ResamplerCache.FILTER)
    got = ResamplerCache().resample(wave.cuda(), source, 16000)
    assert got.device.type == "cuda" and got.dtype == dtype
    torch.testing.assert_close(got.cpu(), expected, rtol=0, atol=atol)


@pytest.mark.parametrize("kind, norm", [("hubert", "group"), ("wav2vec2", "layer")])
def test_ssl_batches_on_the_gpu_match_the_model_alone_on_the_cpu(tmp_path, utterances, waves,
                                                                  kind, norm):
    path = str(build_ssl_model.build(tmp_path / kind, kind, norm))
    net, fe = AutoModel.from_pretrained(path).eval(), AutoFeatureExtractor.from_pretrained(path)
    reference = {}
    with torch.inference_mode():
        for utt, wave in waves.items():
            states = net(**fe(wave, sampling_rate=16000, return_tensors="pt"),
                         output_hidden_states=True).hidden_states
            for n, state in enumerate(states):
                reference[utt, n] = state[0].numpy()
    extractor = load_extractor("ssl", path, device="cuda")
    assert extractor.max_batch_size is None  # on a GPU, padded batches by default
    for seconds in (1, 300):  # each utterance alone, then padded batches of many lengths
        out = engine_outputs(extractor, utterances, seconds)
        got = {(utt, n): out[utt][f"layer{n}"] for utt, n in reference}
        worst = worst_relative(got, reference)
        print(f"\n{kind}-{norm} on {torch.cuda.get_device_name()}, batch_seconds={seconds}: "
              f"max abs difference to the CPU model alone / max |h| {worst:.1e}")
        assert worst <= 1e-4  # TF32 gave 8e-3


def test_speechbrain_batches_on_the_gpu_match_the_cpu(tmp_path, utterances):
    path = str(build_speechbrain_model.build(tmp_path / "ecapa", "ecapa"))
    cpu = load_extractor("speechbrain", path)
    cpu.max_batch_size = None
    expected = engine_outputs(cpu, utterances, 300)
    gpu = load_extractor("speechbrain", path, device="cuda")
    assert gpu.max_batch_size is None
    got = engine_outputs(gpu, utterances, 300)
    worst = worst_relative(got, expected)
    print(f"\nECAPA on {torch.cuda.get_device_name()} against the CPU, both batched: "
          f"max abs difference / max |v| {worst:.1e}")
    assert worst <= 1e-4


def test_stages_on_cuda_match_the_cpu(tmp_path, stage_env):
    """--device cuda: run.pl gives each job a GPU of its own; the outputs are the CPU's."""
    data = make_data_dir(tmp_path / "data", keep=SUBSET)
    ecapa = build_speechbrain_model.build(tmp_path / "ecapa", "ecapa")
    hubert = build_ssl_model.build(tmp_path / "hubert", "hubert", "group")
    stages = {"speechbrain": (run_stage, ["--toolkit", "speechbrain", "--model", ecapa]),
              "ssl": (run_feats_stage, ["--model", hubert, "--extractor_opts", "--layers 2"])}
    for toolkit, (stage, args) in stages.items():
        outputs = {}
        for device, nj in (("cpu", 1), ("cuda", 2)):
            out = tmp_path / f"{toolkit}_{device}"
            stage(["--nj", nj, "--device", device, *args, data, out], stage_env)
            scp = next(p for p in sorted(out.glob("*.scp")) if not p.name.startswith("spk_"))
            outputs[device] = dict(kaldiio.load_scp_sequential(str(scp)))
            if device == "cuda":
                log = (out / "log" / "extract.1.log").read_text()
                assert f"{toolkit} on cuda:0 ({torch.cuda.get_device_name(0)}" in log, log
        assert sorted(outputs["cuda"]) == sorted(SUBSET)
        worst = worst_relative(outputs["cuda"], outputs["cpu"])
        print(f"\n{toolkit} stage, cuda --nj 2 against cpu --nj 1: max abs difference / "
              f"max |v| {worst:.1e}")
        assert worst <= 1e-4


# --precision on the GPU (speechdump/precision.py): each reduced precision against fp32 on the
# same GPU, through the engine as a job runs it. Asserted: every embedding's cosine to fp32's
# >= 0.999 (Resemblyzer's real encoder, a random-init ECAPA); bf16 and fp16 must also differ
# from fp32 (autocast took effect). Not yet measured on a GPU: print what is seen.
PRECISION_COSINE = 0.999


def worst_cosine(got: dict, expected: dict) -> float:
    assert got.keys() == expected.keys()
    return min(float(v @ got[k] / np.linalg.norm(v) / np.linalg.norm(got[k]))
               for k, v in expected.items())


def precision_outputs(extractor, utterances, value: str) -> dict:
    """The engine's outputs at --precision ``value`` on cuda, set up as pyscripts/extract.py
    sets up a job; the TF32 switches are put back to fp32's afterwards."""
    from speechdump import engine, precision

    out = {}
    precision.configure(value, "cuda")
    try:
        if value == "tf32":
            assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
        else:
            assert not torch.backends.cuda.matmul.allow_tf32
        engine.run(utterances, extractor, out.__setitem__,
                   engine.EngineOptions(batch_seconds=300, num_workers=2, progress=False,
                                        precision=value, device="cuda"))
    finally:
        precision.configure("fp32", "cuda")
    return out


@pytest.mark.parametrize("toolkit", ["resemblyzer", "speechbrain"])
def test_reduced_precisions_on_the_gpu_agree_with_fp32(tmp_path, utterances, toolkit):
    model = (str(build_speechbrain_model.build(tmp_path / "ecapa", "ecapa"))
             if toolkit == "speechbrain" else None)
    extractor = load_extractor(toolkit, model, device="cuda")
    fp32 = precision_outputs(extractor, utterances, "fp32")
    for value in ("tf32", "bf16", "fp16"):
        got = precision_outputs(extractor, utterances, value)
        assert all(v.dtype == np.float32 for v in got.values())
        cosine = worst_cosine(got, fp32)
        worst = max(float(np.abs(got[k] - fp32[k]).max()) for k in fp32)
        print(f"\n{toolkit} --precision {value} on {torch.cuda.get_device_name()}: worst "
              f"cosine to fp32 {cosine:.7f}, max abs difference {worst:.1e}")
        assert cosine >= PRECISION_COSINE
        if value != "tf32":
            assert worst > 0  # autocast took effect


def test_a_bf16_stage_on_cuda_records_it_and_agrees_with_fp32(tmp_path, stage_env):
    """The stage's plumbing on a GPU: --precision reaches the jobs, their log and meta.json."""
    data = make_data_dir(tmp_path / "data", keep=SUBSET)
    outputs = {}
    for value in ("fp32", "bf16"):
        out = tmp_path / value
        run_stage(["--nj", 2, "--device", "cuda", "--precision", value, data, out], stage_env)
        outputs[value] = dict(kaldiio.load_scp_sequential(str(out / "resemblyzer.scp")))
        assert f"at --precision {value}" in (out / "log" / "extract.1.log").read_text()
        assert f'"precision": "{value}"' in (out / "meta.json").read_text()
    cosine = worst_cosine(outputs["bf16"], outputs["fp32"])
    print(f"\nresemblyzer stage --precision bf16 on cuda: worst cosine to fp32 {cosine:.7f}")
    assert cosine >= PRECISION_COSINE


# The families added since the first GPU tests, each on the GPU (padded batches, the default
# there) against the CPU engine (one utterance per forward pass): toolkit, model builder, options.
FAMILIES = {
    "whisper": ("whisper", build_hf_models.build_whisper, {}),
    "w2v_bert": ("w2v_bert", build_hf_models.build_w2v_bert, {}),
    "xvector-wavlm": ("xvector", lambda d: build_hf_models.build_xvector(d, "wavlm", "group"), {}),
    "ssl-causal": ("ssl", lambda d: build_ssl_model.build(d, "hubert", "group"),
                   {"layers": "3", "window_seconds": 2.0, "hop_seconds": 0.5, "causal": True,
                    "pool": "last"}),
    "ssl-stitched": ("ssl", lambda d: build_ssl_model.build(d, "hubert", "group"),
                     {"layers": "3", "window_seconds": 3.0, "hop_seconds": 2.0}),
}


def flat(outputs: dict) -> dict:
    """{(utt, stream): array} of engine outputs (an array, or a dict of streams, per utt)."""
    return {(utt, name): np.asarray(array, dtype=np.float64)
            for utt, output in outputs.items()
            for name, array in (output.items() if isinstance(output, dict) else [("", output)])}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_new_families_on_the_gpu_match_the_cpu(family, tmp_path, utterances):
    toolkit, build, options = FAMILIES[family]
    path = str(build(tmp_path / family))
    subset = [u for u in utterances if u.utt_id in SUBSET]
    expected = flat(engine_outputs(load_extractor(toolkit, path, "cpu", **options), subset))
    got = flat(engine_outputs(load_extractor(toolkit, path, "cuda", **options), subset))
    worst = worst_relative(got, expected)
    print(f"\n{family} on {torch.cuda.get_device_name()} against the CPU: max abs difference "
          f"/ max |v| {worst:.1e}")
    assert worst <= 1e-4


@pytest.mark.parametrize("kind", build_codec_models.KINDS)
def test_codec_tokens_on_the_gpu_equal_the_models_own_encode_there(kind, tmp_path, utterances):
    """Every token of the GPU engine equals the model's own ``encode`` of each utterance alone on
    the same GPU (tokens are argmins, which the CPU may round otherwise: the GPU is the
    reference)."""
    from test_codec import OPTS, own_encode

    path = str(build_codec_models.build(tmp_path / kind, kind))
    options = dict(zip(OPTS[kind].split()[0::2], OPTS[kind].split()[1::2]))
    extractor = load_extractor("codec", path, "cuda", **{k.lstrip("-"): v
                                                         for k, v in options.items()})
    subset = [u for u in utterances if u.utt_id in SUBSET]
    got = engine_outputs(extractor, subset)
    model = AutoModel.from_pretrained(path).eval().cuda()
    fe = AutoFeatureExtractor.from_pretrained(path)
    resamplers = ResamplerCache()
    for utt in subset:
        wave = load_audio(utt, fe.sampling_rate, resamplers)
        inputs = {k: v.cuda() for k, v in
                  fe(wave, sampling_rate=fe.sampling_rate, return_tensors="pt").items()}
        threads = torch.get_num_threads()
        torch.set_num_threads(1 if kind == "encodec" else threads)  # as the extractor runs it
        with torch.inference_mode():
            codes = own_encode(kind, model, inputs).audio_codes
        torch.set_num_threads(threads)
        codes = (codes[0] if kind == "encodec" else codes)[0].T.cpu().numpy()
        np.testing.assert_array_equal(got[utt.utt_id], codes, err_msg=f"{kind} {utt.utt_id}")
