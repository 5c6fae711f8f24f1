"""The extractor interface: declared options and typed streams, a toolkit added from outside,
the stages' pass-through of toolkit options, and their pre-flight."""

import re
import subprocess
import sys
import time
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile
import torch
from torchaudio.compliance import kaldi

from conftest import REPO, SAMPLES, make_data_dir, read_pairs, run_feats_stage, run_stage
from speechdump.errors import OptionError
from speechdump.extractors import available, declared_options, get_class, load_extractor, register
from speechdump.extractors.base import Extractor, Option
from speechdump.readers import ScpDataset

PLUGINS = REPO / "test" / "plugins"
sys.path.insert(0, str(PLUGINS))
from levels_extractor import levels_of  # noqa: E402  (registers the toolkit test_levels)

SHORT = ["arctic-aew-a0001", "ljspeech-lj-002-0020", "vctk-p238-165", "vctk-p225-003"]


@pytest.fixture
def plugin_env(stage_env):
    """A stage environment whose jobs find the toolkit of test/plugins/levels_extractor.py."""
    return dict(stage_env, SPEECHDUMP_PLUGINS="levels_extractor",
                PYTHONPATH=f"{PLUGINS}:{stage_env.get('PYTHONPATH', '')}")


def test_every_toolkit_declares_options_its_constructor_takes():
    for toolkit in available():
        cls = get_class(toolkit)
        assert cls.name == toolkit
        names = [o.name for o in declared_options(toolkit)]
        assert names[0] == "channel" and len(set(names)) == len(names)
        assert all(o.help and isinstance(o.type, type) for o in declared_options(toolkit))


def test_the_table_of_built_in_toolkits_names_each_module_that_registers_one():
    from speechdump import extractors

    extractors.import_all()
    registered = {name: cls.__module__.rsplit(".", 1)[1]
                  for name, cls in extractors._REGISTRY.items()
                  if cls.__module__.startswith("speechdump.extractors.")}
    assert registered == extractors.BUILTIN


def test_the_pre_flight_imports_no_torch_where_the_toolkit_needs_none_to_check(tmp_path):
    """The stage's start: the pre-flight imports the module of its toolkit only, and reads
    declarations and configs without torch (torch alone takes about a second to import; the
    modules bind ``speechdump.lazy.torch``). Resemblyzer's package, ESPnet's checkpoint check and
    X-Codec's config defaults need torch, and take it."""
    from build_codec_models import build as build_codec
    from build_hf_models import build_w2v_bert, build_whisper, build_xvector
    from build_speechbrain_model import build as build_speechbrain
    from build_ssl_model import build as build_ssl

    models = {"fbank": None, "mfcc": None, "silero_vad": None,
              "speechbrain": build_speechbrain(tmp_path / "ecapa", channels=[16, 16, 16, 16, 48]),
              "ssl": build_ssl(tmp_path / "ssl", "hubert", "group"),
              "whisper": build_whisper(tmp_path / "whisper"),
              "w2v_bert": build_w2v_bert(tmp_path / "w2v_bert"),
              "xvector": build_xvector(tmp_path / "xvector", "wavlm", "group"),
              "codec": build_codec(tmp_path / "encodec", "encodec")}
    for toolkit, model in models.items():
        stage = "speaker" if toolkit in ("speechbrain", "xvector") else "features"
        model_opt = ["--model", str(model)] if model else []
        argv = [str(REPO / "pyscripts" / "check_extraction.py"), "--stage", stage,
                "--toolkit", toolkit, *model_opt, "--fingerprint_to", str(tmp_path / "fp.json")]
        code = (f"import runpy, sys\nsys.argv = {argv!r}\n"
                "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
                "except SystemExit as exc:\n    assert not exc.code, exc.code\n"
                "print('torch' in sys.modules)\n")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip().splitlines()[-1] == "False", f"{toolkit} imported torch"


def test_a_declaration_that_disagrees_with_the_constructor_is_refused():
    class Mismatched(Extractor):
        options = (Option("levels", int, 8, "levels"),)

        def __init__(self, model=None, device="cpu", levels=4):
            pass

    with pytest.raises(TypeError, match="option levels defaults to 8"):
        register("mismatched")(Mismatched)

    class Undeclared(Extractor):
        def __init__(self, model=None, device="cpu", hidden=1):
            pass

    with pytest.raises(TypeError, match=r"takes \['hidden'\], its options declare \[\]"):
        register("undeclared")(Undeclared)
    assert "mismatched" not in available() and "undeclared" not in available()


def test_option_values_are_parsed_and_checked_from_their_declaration():
    extractor = load_extractor("mfcc", num_ceps="20", num_mel_bins="30", dither="0")
    assert (extractor.num_ceps, extractor.num_mel_bins) == (20, 30)
    with pytest.raises(OptionError, match="--num_mel_bins 'forty': expected int"):
        load_extractor("fbank", num_mel_bins="forty")
    with pytest.raises(OptionError, match="--frame_shift -1: must be positive"):
        load_extractor("fbank", frame_shift=-1)
    with pytest.raises(OptionError, match="--num_ceps 30 cannot exceed --num_mel_bins 23"):
        get_class("mfcc").check(None, {**{o.name: o.default for o in get_class("mfcc").options},
                                       "num_ceps": 30})


def test_a_toolkit_from_a_plugin_module_runs_through_the_stage_with_its_int_stream(
        tmp_path, plugin_env, waves):
    data = make_data_dir(tmp_path / "data", keep=SHORT)
    help_text = run_feats_stage(["--toolkit", "test_levels", "--help"], plugin_env).stderr
    assert "--levels INT" in help_text and "number of energy levels; default: 8" in help_text

    out = tmp_path / "out"
    proc = run_feats_stage(["--toolkit", "test_levels", "--extractor_opts", "--levels 100000",
                            "--tag", "tokens", "--nj", 2, data, out], plugin_env)
    assert "test_levels: (one stream): int [frames]" in proc.stderr
    assert f"{out}/tokens.scp: 4 int32 token sequences" in proc.stdout
    stored = dict(kaldiio.load_scp_sequential(str(out / "tokens.scp")))
    assert list(stored) == [k for k, _ in read_pairs(data / "text")]
    for utt, tokens in stored.items():
        assert tokens.dtype == np.int32 and tokens.max() > 2048  # float16 would round these
        assert np.array_equal(tokens, levels_of(waves[utt], 100000)), utt
    dataset = ScpDataset({"tokens": str(out / "tokens.scp")})
    assert all(np.array_equal(dataset.get(utt)["tokens"], stored[utt]) for utt in stored)
    text = [line.split() for line in (out / "tokens").read_text().splitlines()]
    assert [(utt, [int(t) for t in toks]) for utt, *toks in text] == \
        [(utt, tokens.tolist()) for utt, tokens in stored.items()]
    frames = dict(read_pairs(out / "utt2num_frames"))
    assert all(int(frames[utt]) == len(tokens) for utt, tokens in stored.items())

    # --dtype applies to float streams only, and this toolkit writes none.
    proc = run_feats_stage(["--toolkit", "test_levels", "--dtype", "float16", data,
                            tmp_path / "f16"], plugin_env, check=False)
    assert proc.returncode == 1 and "--dtype float16: this toolkit writes no float stream" \
        in proc.stderr and not (tmp_path / "f16").exists()


def shell_code(text: str):
    """(line number, code) of a shell script without its comments and documentation: quoted
    strings holding a space (prose: usage text, log lines) are dropped, single words in quotes
    (values compared or passed) are kept. Strings may span lines."""
    kept, word, quote, comment, lineno, start_at = [], [], None, False, 1, 0
    for i, char in enumerate(text + "\n"):
        if char == "\n":
            comment = False
            if quote is None:
                kept.append((lineno, "".join(word)))
                word = []
            else:
                word.append(" ")  # a string spanning lines is prose
            lineno += 1
        elif comment:
            continue
        elif quote is not None:
            if char == quote and text[i - 1] != "\\":
                body = "".join(word[start_at:])
                word = word[:start_at] + ([] if " " in body else list(body))
                quote = None
            else:
                word.append(char)
        elif char in "\"'" and text[i - 1] != "\\":
            quote, start_at = char, len(word)
        elif char == "#" and (i == 0 or text[i - 1] in " \t\n"):
            comment = True
        else:
            word.append(char)
    return kept


def test_no_toolkit_is_named_in_the_stage_scripts():
    """Stages pass toolkit options through: a toolkit name may appear only as a default value
    or in documentation (comments, usage text, log lines)."""
    names = set(available())
    scripts = sorted((REPO / "scripts").rglob("*.sh")) + sorted((REPO / "egs" / "TEMPLATE")
                                                                .rglob("*.sh"))
    offending = []
    for path in scripts:
        for lineno, code in shell_code(path.read_text()):
            if re.match(r"^\s*toolkit=\w+\s*$", code):
                continue  # the default
            offending += [f"{path.relative_to(REPO)}:{lineno}: {code.strip()}"
                          for word in re.findall(r"[\w-]+", code) if word in names]
    assert not offending, "\n".join(offending)
    code = dict(shell_code('a=1  # ssl here\nif [ "$t" = "ssl" ]; then\nlog "with ssl"\n'))
    assert code == {1: "a=1  ", 2: "if [ $t = ssl ]; then", 3: "log ", 4: ""}


def preflight(args, env, script="extract_ssl_feats.sh"):
    start = time.perf_counter()
    proc = subprocess.run([str(REPO / "scripts" / script), *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=120)
    return proc, time.perf_counter() - start


@pytest.fixture(scope="module")
def ssl_model(tmp_path_factory):
    import build_ssl_model

    return build_ssl_model.build(tmp_path_factory.mktemp("ssl") / "hubert", "hubert", "group")


@pytest.mark.parametrize("case", ["wrong option", "bad value", "wrong-toolkit model dir",
                                  "missing model", "no model", "frame level to speaker stage",
                                  "compress vectors"])
def test_preflight_refuses_before_any_job_with_one_line(case, tmp_path, stage_env, ssl_model):
    data = make_data_dir(tmp_path / "data", keep=SHORT)
    out = tmp_path / "out"
    args, script, expected = {
        "wrong option": (["--toolkit", "fbank", "--extractor_opts", "--layers 6"],
                         "extract_ssl_feats.sh", "fbank takes no option --layers; its options: "
                         "--channel --max_overshoot --num_mel_bins"),
        "bad value": (["--model", ssl_model, "--extractor_opts", "--pool max"],
                      "extract_ssl_feats.sh", "--pool 'max': choose from none, mean, last"),
        "wrong-toolkit model dir": (["--toolkit", "speechbrain", "--model", ssl_model],
                                    "extract_spk_embed.sh", "has no hyperparams.yaml (it holds "
                                    "preprocessor_config.json: a transformers model "
                                    "(--toolkit ssl))"),
        "missing model": (["--model", tmp_path / "no_such_model"], "extract_ssl_feats.sh",
                          "is not a directory"),
        "no model": (["--toolkit", "rawnet"], "extract_spk_embed.sh", "rawnet needs --model"),
        "frame level to speaker stage": (["--toolkit", "fbank"], "extract_spk_embed.sh",
                                         "the speaker stage needs one float vector per "
                                         "utterance; --toolkit fbank with these options writes "
                                         "(one stream): float [frames, dim]"),
        "compress vectors": (["--model", ssl_model, "--extractor_opts", "--layers 2 --pool mean",
                              "--compress", "true"], "extract_ssl_feats.sh",
                             "--compress true: Kaldi compresses matrices only"),
    }[case]
    proc, seconds = preflight([*args, data, out], stage_env, script)
    print(f"\n{case}: refused in {seconds:.2f} s")
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR:")]
    assert proc.returncode == 1, proc.stderr
    assert len(errors) == 1 and expected in errors[0], proc.stderr
    assert "refused before any job: nothing was written" in proc.stderr
    assert not out.exists()  # no lock, no split, no job log


def test_a_failing_job_shows_its_reason_on_the_console(tmp_path, stage_env):
    # Audio that no job can read (bad weights are refused by the pre-flight, before any job).
    data = make_data_dir(tmp_path / "data", keep=SHORT)
    not_audio = tmp_path / "not_audio.wav"
    not_audio.write_text("this is not audio\n")
    (data / "wav.scp").write_text("".join(f"{utt} {not_audio}\n" for utt in sorted(SHORT)))
    proc = run_stage(["--nj", 2, data, tmp_path / "out"], stage_env, check=False)
    assert proc.returncode == 1
    console = proc.stderr
    assert "extract jobs failed; what they said:" in console
    for job in (1, 2):
        assert f"job {job} ({tmp_path}/out/log/extract.{job}.log): ERROR: utterance '" in console
    assert str(not_audio) in console


def test_fbank_at_8khz_is_bit_exact_with_torchaudio_kaldi(tmp_path, stage_env):
    """--sample_rate 8000 on 8 kHz telephone-band audio: no resampling, Kaldi's own features."""
    source, rate = soundfile.read(SAMPLES / "audio" / "arctic-aew-a0001.wav", dtype="int16")
    pcm = source[::2]  # 16 -> 8 kHz by decimation: the file is the test input, not a reference
    wav = tmp_path / "tel.wav"
    soundfile.write(wav, pcm, 8000, subtype="PCM_16")
    data = tmp_path / "data"
    data.mkdir()
    (data / "wav.scp").write_text(f"tel-0001 {wav}\n")
    (data / "utt2spk").write_text("tel-0001 tel\n")
    (data / "spk2utt").write_text("tel tel-0001\n")
    run_feats_stage(["--toolkit", "fbank", "--extractor_opts", "--sample_rate 8000 "
                     "--num_mel_bins 23", "--nj", 1, data, tmp_path / "out"], stage_env)
    (utt, stored), = kaldiio.load_scp_sequential(str(tmp_path / "out" / "feats.scp"))
    reference = kaldi.fbank(torch.from_numpy(pcm.astype(np.float32))[None], num_mel_bins=23,
                            sample_frequency=8000.0, dither=0.0, energy_floor=0.0,
                            snip_edges=True)
    assert utt == "tel-0001" and np.array_equal(stored, reference.numpy())
    assert stored.shape[0] == 1 + (len(pcm) - 200) // 80  # 25 ms / 10 ms at 8 kHz


def test_channel_picks_one_channel_of_a_stereo_file(tmp_path, stage_env):
    path = SAMPLES / "audio" / "jfk-inaugural1961.flac"
    stereo, rate = soundfile.read(path, dtype="float32", always_2d=True)
    assert stereo.shape[1] == 2 and rate == 44100
    data = tmp_path / "data"
    data.mkdir()
    (data / "wav.scp").write_text(f"jfk {path}\n")
    (data / "utt2spk").write_text("jfk jfk\n")
    (data / "spk2utt").write_text("jfk jfk\n")
    stored = {}
    for channel in ("0", "1", "mean"):
        run_feats_stage(["--toolkit", "fbank", "--extractor_opts",
                         f"--sample_rate 44100 --channel {channel}", "--nj", 1, data,
                         tmp_path / channel], stage_env)
        (_, stored[channel]), = kaldiio.load_scp_sequential(str(tmp_path / channel / "feats.scp"))
    for channel in ("0", "1"):
        samples = torch.from_numpy(stereo[:, int(channel)] * 32768.0)[None]
        reference = kaldi.fbank(samples, num_mel_bins=80, sample_frequency=44100.0, dither=0.0,
                                energy_floor=0.0, snip_edges=True)
        assert np.array_equal(stored[channel], reference.numpy()), channel
    assert not np.array_equal(stored["0"], stored["1"])  # the two channels differ
    assert not np.array_equal(stored["mean"], stored["0"])

    proc = run_feats_stage(["--toolkit", "fbank", "--extractor_opts", "--channel 2", "--nj", 1,
                            data, tmp_path / "ch2"], stage_env, check=False)
    assert proc.returncode == 1
    assert "utterance 'jfk'" in proc.stderr and "--channel 2: the audio has 2 channel(s)" \
        in proc.stderr
    proc = run_feats_stage(["--toolkit", "fbank", "--extractor_opts", "--channel left", data,
                            tmp_path / "left"], stage_env, check=False)
    assert "--channel left: expected mean or a channel number" in proc.stderr


def test_stage_help_lists_the_toolkit_options(stage_env, ssl_model):
    proc = run_feats_stage(["--toolkit", "ssl", "--help"], stage_env)
    assert "--extractor_opts" in proc.stderr
    for option in ("--layers STR", "--pool STR", "--window_seconds FLOAT", "--channel STR"):
        assert option in proc.stderr
    assert "(none|mean|last)" in proc.stderr
    proc = run_stage(["--toolkit", "rawnet", "--help"], stage_env)
    assert "--num_crops INT" in proc.stderr and "crops per utterance; default: 10" in proc.stderr
    assert Path(ssl_model).is_dir()
    # A Python that cannot run speechdump still gets the usage, and what to do for the rest.
    proc = run_feats_stage(["--toolkit", "ssl", "--python", "false", "--help"], stage_env)
    assert "Usage:" in proc.stderr and "Traceback" not in proc.stderr
    assert "source the recipe's path.sh, or give --python" in proc.stderr


def test_the_preflight_streams_are_the_ones_the_model_writes(ssl_model):
    from speechdump.extractors import check

    for opts in ({"layers": "0,2"}, {"layers": "1", "pool": "mean"},
                 {"layers": "2", "window_seconds": "2", "hop_seconds": "1"}):
        _, planned = check("ssl", ssl_model, opts)
        loaded = load_extractor("ssl", ssl_model, **opts).streams
        assert [(s.name, s.kind, s.shape, s.exact) for s in planned] == \
            [(s.name, s.kind, s.shape, s.exact) for s in loaded]
        assert all(s.dim == t.dim for s, t in zip(planned, loaded))
    frames = load_extractor("ssl", ssl_model, layers="2").streams[0]
    assert frames.frame_shift == 0.02  # the strides of the convolutions: 320 samples at 16 kHz
