"""Every patch of a third-party internal, each checked against the version it was written for.

Batched output equals what each utterance gets alone, and jobs start in seconds, because of a few
patches of other packages' internals: SpeechBrain's convolution padding and pooling noise, the
feature encoder and positional convolutions of transformers' speech encoders, typeguard's
decorator while ESPnet is imported, torchaudio's resampling kernel (read, not changed) and
torch's TF32 switches. They were written for the versions pinned in tools/constraints.txt
(``TESTED``). A new release can rename what is patched or stop calling it, and the patch would
then do nothing while batches quietly stopped equalling lone utterances. So every patch here

1. compares the installed version with the tested one: another version may run, with a warning
   in the job log naming the package, both versions and the patch;
2. checks that what it replaces or reads exists, else raises CompatError naming the package, its
   version and the patch;
3. checks on first use that it took effect (the per-item path ran on the first padded batch, the
   hooks fired, the resampler gave torchaudio's output, float32 stayed float32 on the GPU), else
   raises CompatError: the job stops rather than write inexact output. The one patch that only
   saves time (ESPnet's import) warns instead: without it the output is the same.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import importlib.util
import logging
import sys
import types
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, Hashable, Optional, Sequence, Set

from speechdump.errors import CompatError
from speechdump.lazy import functional as F
from speechdump.lazy import torch

log = logging.getLogger(__name__)

# The versions the patches below were written and tested against: the pins of
# tools/constraints.txt (test/test_compat.py keeps the two equal).
TESTED: Dict[str, str] = {
    "speechbrain": "1.1.2",
    "torch": "2.9.1",
    "torchaudio": "2.9.1",
    "transformers": "5.24.0",
    "typeguard": "4.6.1",
    "silero-vad": "6.2.3",
}


@dataclass(frozen=True)
class Patch:
    """One patch: the package whose internal it touches, that internal, and what it is for."""

    package: str
    target: str
    purpose: str


SPEECHBRAIN_PADDING = Patch(
    "speechbrain", "speechbrain.nnet.CNN.Conv1d._manage_padding",
    "pads each item of a padded batch at its own end, as the item alone is padded")
SPEECHBRAIN_NOISE = Patch(
    "speechbrain", "speechbrain.nnet.pooling.StatisticsPooling._get_gauss_noise",
    "the noise an utterance alone gets after torch.manual_seed(0), for every item")
TRANSFORMERS_GROUP_NORM = Patch(
    "transformers", "<model>.feature_extractor.forward",
    "runs the feature encoder's convolutions up to the last GroupNorm on each item alone")
TRANSFORMERS_POSITIONAL = Patch(
    "transformers", "forward hooks on <model>.encoder.pos_conv_embed.layers",
    "zeroes each item's padded frames after every positional convolution (data2vec-audio)")
TYPEGUARD_IMPORT = Patch(
    "typeguard", "typeguard.typechecked while espnet2 is imported",
    "leaves ESPnet's functions as written instead of recompiling them with type checks")
TORCHAUDIO_RESAMPLE = Patch(
    "torchaudio", "torchaudio.transforms.Resample attributes orig_freq, new_freq, gcd, width, "
    "kernel", "speechdump.audio.SincResampler computes torchaudio's resampling from its kernel")
SILERO_NETWORK = Patch(
    "silero-vad", "silero_vad.jit's _model (run_extractors, encoder, decoder.rnn, "
    "decoder.decoder)", "runs the network on every chunk of a batch at once, the LSTM cell "
    "stepped per utterance (read, not changed)")
TORCH_TF32 = Patch(
    "torch", "torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32",
    "float32 convolutions and matrix products on a GPU in float32, not TF32")


def installed_version(package: str) -> str:
    """The installed distribution's version, local label dropped (``2.9.1+cu128``: ``2.9.1``)."""
    try:
        return importlib.metadata.version(package).split("+")[0]
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def error(patch: Patch, problem: str) -> CompatError:
    """The CompatError of ``patch``: package, installed and tested version, patch, problem."""
    installed, tested = installed_version(patch.package), TESTED[patch.package]
    return CompatError(
        f"{patch.package} {installed} (tested: {tested}), patch '{patch.target}' "
        f"({patch.purpose}): {problem}. The job stops rather than risk inexact output: "
        f"install {patch.package}=={tested} (tools/setup.sh, tools/constraints.txt) or update "
        f"speechdump/compat.py for {patch.package} {installed}")


_version_checked: Set[Patch] = set()


def check_version(patch: Patch) -> None:
    """Warns, once per patch and process, when the installed version is not the tested one."""
    if patch in _version_checked:
        return
    _version_checked.add(patch)
    installed, tested = installed_version(patch.package), TESTED[patch.package]
    if installed != tested:
        log.warning("%s %s is installed, but patch '%s' was tested with %s %s; it is checked "
                    "on first use (tools/constraints.txt pins the tested versions)",
                    patch.package, installed, patch.target, patch.package, tested)


def _describe(owner) -> str:
    if isinstance(owner, type):
        return owner.__qualname__
    if isinstance(owner, types.ModuleType):
        return owner.__name__
    return f"{type(owner).__qualname__} object"


def require(patch: Patch, owner, *names: str) -> None:
    """Checks the version, and that ``owner`` has every attribute in ``names``."""
    check_version(patch)
    missing = [name for name in names if not hasattr(owner, name)]
    if missing:
        raise error(patch, f"{_describe(owner)} has no {', '.join(missing)}")


class Probe:
    """Records which of ``expected`` patched code paths ran; ``verify`` fails unless all did.

    Verified once, on the first batch that needs the patch: that batch proves the installed
    package calls what was patched; afterwards recording and verifying cost nothing."""

    def __init__(self, patch: Patch, expected: int, what: str):
        self.patch = patch
        self.expected = expected
        self.what = what
        self.ran: Set[Hashable] = set()
        self.verified = expected == 0

    def hit(self, key: Hashable = 0) -> None:
        if not self.verified:
            self.ran.add(key)

    def verify(self) -> None:
        if self.verified:
            return
        if len(self.ran) < self.expected:
            raise error(self.patch, f"{self.what} did not take effect: {len(self.ran)} of "
                                    f"{self.expected} ran on the first batch that needs them")
        self.verified = True


Frames = Callable[[], Optional["torch.Tensor"]]


# -- SpeechBrain --------------------------------------------------------------------------------

class PerItemPadding:
    """Replaces a SpeechBrain ``Conv1d._manage_padding``: pads every item at its own end.

    SpeechBrain pads the time axis of a whole batch at once (reflect by default), so an item
    shorter than the batch sees the batch's padding instead of the reflection of its own last
    frames. This pads the frames of item ``i`` (``frames()[i]`` of them) exactly as the
    convolution would pad that item alone; what follows lies beyond the item and is never read
    by its valid output frames. While ``frames()`` is None it pads as SpeechBrain does.
    """

    def __init__(self, conv, frames: Frames, probe: Probe):
        self.conv = conv
        self.frames = frames
        self.probe = probe
        self.original = conv._manage_padding

    def __call__(self, x, kernel_size, dilation, stride):
        frames = self.frames()
        if frames is None:
            return self.original(x, kernel_size, dilation, stride)
        self.probe.hit(id(self))
        pad = dilation * (kernel_size - 1) // 2  # SpeechBrain's get_padding_elem for stride 1
        mode = self.conv.padding_mode
        total = x.shape[-1]
        if x.shape[0] != len(frames) or total != int(frames.max()):
            raise RuntimeError("per-item padding: the time axis is not the batch's frames")
        pos = torch.arange(-pad, total + pad, device=x.device)[None, :]  # [1, T + 2p]
        length = frames[:, None]
        if mode in ("constant", "zeros"):
            inside = (pos >= 0) & (pos < length)
            return F.pad(x, (pad, pad)) * inside[:, None, :].to(x.dtype)
        if mode == "reflect":
            src = torch.where(pos < 0, -pos,
                              torch.where(pos >= length, 2 * (length - 1) - pos, pos))
        elif mode == "replicate":
            src = torch.minimum(pos.clamp(min=0), length - 1)
        elif mode == "circular":
            src = torch.remainder(pos, length)
        else:
            raise RuntimeError(f"per-item padding: unknown padding mode {mode!r}")
        src = src.clamp(0, total - 1)
        return torch.gather(x, 2, src[:, None, :].expand(x.shape[0], x.shape[1], -1))


def patch_speechbrain_padding(convs: Sequence, frames: Frames) -> Probe:
    """Pads each item of a batch at its own end in every convolution of ``convs`` (SpeechBrain
    ``Conv1d`` with stride 1 and ``padding="same"``); ``frames()`` gives the frame counts of the
    batch in forward, or None (pad as SpeechBrain does). Verify the returned probe after the
    first batch run with frame counts: every convolution must have padded per item."""
    from speechbrain.nnet.CNN import Conv1d

    if not convs:
        return Probe(SPEECHBRAIN_PADDING, 0, "")
    require(SPEECHBRAIN_PADDING, Conv1d, "_manage_padding")
    probe = Probe(SPEECHBRAIN_PADDING, len(convs), "per-item padding of the convolutions")
    for conv in convs:
        require(SPEECHBRAIN_PADDING, conv, "padding_mode")
        conv._manage_padding = PerItemPadding(conv, frames, probe)
    return probe


class LoneUtteranceNoise:
    """``StatisticsPooling._get_gauss_noise`` pinned: each item gets the noise SpeechBrain draws
    for an utterance alone after ``torch.manual_seed(0)`` (same formula, same generator)."""

    def __init__(self, pooling, probe: Probe):
        self.eps = pooling.eps
        self.probe = probe
        self.cache = {}

    def __call__(self, shape, device="cpu"):
        self.probe.hit(id(self))
        key = (int(shape[-1]), str(device))
        if key not in self.cache:
            generator = torch.Generator(device=device).manual_seed(0)
            noise = torch.randn((1, shape[-1]), generator=generator, device=device)
            noise -= torch.min(noise)
            noise /= torch.max(noise)
            self.cache[key] = self.eps * ((1 - 9) * noise + 9)
        return self.cache[key].expand(shape)


def patch_speechbrain_noise(poolings: Sequence) -> Probe:
    """Pins the noise of every ``StatisticsPooling`` in ``poolings``; verify the returned probe
    after the first forward pass: every pooling that returns means must have drawn from it."""
    from speechbrain.nnet.pooling import StatisticsPooling

    if not poolings:
        return Probe(SPEECHBRAIN_NOISE, 0, "")
    require(SPEECHBRAIN_NOISE, StatisticsPooling, "_get_gauss_noise")
    noisy = [p for p in poolings if getattr(p, "return_mean", True)]
    probe = Probe(SPEECHBRAIN_NOISE, len(noisy), "the pinned noise of the statistics pooling")
    for pooling in poolings:
        require(SPEECHBRAIN_NOISE, pooling, "eps")
        pooling._get_gauss_noise = LoneUtteranceNoise(pooling, probe)
    return probe


# -- transformers -------------------------------------------------------------------------------

def patch_group_norm(model, lengths: Frames) -> Probe:
    """Runs the convolutions of ``model.feature_extractor`` up to its last GroupNorm on each item
    of a padded batch alone (``lengths()``: samples per item, or None: unpadded, run as is).

    Each item's samples go through the same tensors and operations as alone; the results are
    zero-padded and the remaining convolutions run on the batch (each valid frame only reads
    valid frames of the layer below). Verify the returned probe after the first padded batch."""
    require(TRANSFORMERS_GROUP_NORM, model, "feature_extractor")
    encoder = model.feature_extractor
    require(TRANSFORMERS_GROUP_NORM, encoder, "conv_layers", "forward")
    convs = encoder.conv_layers
    grouped = [i for i, layer in enumerate(convs)
               if any(isinstance(m, torch.nn.GroupNorm) for m in layer.modules())]
    if not grouped:
        return Probe(TRANSFORMERS_GROUP_NORM, 0, "")
    head, tail = list(convs)[:grouped[-1] + 1], list(convs)[grouped[-1] + 1:]
    original = encoder.forward
    probe = Probe(TRANSFORMERS_GROUP_NORM, 1, "the per-item group-norm path of the feature encoder")

    def forward(input_values):
        counts = lengths()
        if counts is None:
            return original(input_values)
        probe.hit()
        items = []
        for i, n in enumerate(counts.tolist()):
            h = input_values[i:i + 1, None, :n]
            for layer in head:
                h = layer(h)
            items.append(h[0])
        h = items[0].new_zeros((len(items), items[0].shape[0],
                                max(item.shape[-1] for item in items)))
        for i, item in enumerate(items):
            h[i, :, :item.shape[-1]] = item
        for layer in tail:
            h = layer(h)
        return h

    encoder.forward = forward
    return probe


def _zero_padded_frames(frames: Frames, probe: Probe, index: int, module, args, output):
    """Forward hook: each item's frames past its own length become 0 (what it sees alone)."""
    counts = frames()
    if counts is None:
        return None
    probe.hit(index)
    valid = torch.arange(output.shape[-1], device=output.device)[None, :] < counts[:, None]
    return output.masked_fill(~valid[:, None, :], 0.0)


def hook_positional_convolutions(model, frames: Frames, required: bool) -> Probe:
    """Zeroes each item's padded frames after every convolution of a stacked positional
    embedding (``model.encoder.pos_conv_embed.layers``, data2vec-audio), ``frames()`` giving the
    frames per item of a padded batch (None: unpadded). A model with one positional convolution
    is exact without it and left alone, unless ``required`` (its type has a stack): then a
    missing stack is a CompatError. Verify the returned probe after the first padded batch."""
    stack = getattr(getattr(getattr(model, "encoder", None), "pos_conv_embed", None), "layers",
                    None)
    if not (isinstance(stack, torch.nn.ModuleList) and len(stack) > 1):
        if required:
            check_version(TRANSFORMERS_POSITIONAL)
            raise error(TRANSFORMERS_POSITIONAL, f"{type(model).__qualname__} has no stack of "
                                                 f"convolutions at encoder.pos_conv_embed.layers")
        return Probe(TRANSFORMERS_POSITIONAL, 0, "")
    check_version(TRANSFORMERS_POSITIONAL)
    probe = Probe(TRANSFORMERS_POSITIONAL, len(stack), "the hooks of the positional convolutions")
    for index, layer in enumerate(stack):
        layer.register_forward_hook(functools.partial(_zero_padded_frames, frames, probe, index))
    return probe


TRANSFORMERS_TDNN_LENGTHS = Patch(
    "transformers", "<*ForXVector>._get_tdnn_output_lengths",
    "counts each item's TDNN output frames with the layers' dilations, as the TDNN makes them")


def patch_tdnn_lengths(model) -> Probe:
    """Makes an x-vector head's statistics pooling take each item's true TDNN frames.

    transformers 5.24's ``_get_tdnn_output_lengths`` ignores ``tdnn_dilation`` (``length -
    kernel + 1`` per layer), so with an attention mask the pooling of a shorter item also
    averages frames computed from the padding (6 of them for the TDNN of wavlm-base-plus-sv;
    an utterance alone, without a mask, pools all its frames): 1e-2 off on the sample
    recordings. Here the method counts ``length - dilation * (kernel - 1)`` per layer, what
    ``conv1d`` gives. Verify the returned probe after the first padded batch."""
    require(TRANSFORMERS_TDNN_LENGTHS, model, "_get_tdnn_output_lengths", "config")
    require(TRANSFORMERS_TDNN_LENGTHS, model.config, "tdnn_kernel", "tdnn_dilation")
    probe = Probe(TRANSFORMERS_TDNN_LENGTHS, 1, "the dilation-aware TDNN length count")
    layers = list(zip(model.config.tdnn_kernel, model.config.tdnn_dilation))

    def lengths(input_lengths):
        probe.hit()
        for kernel, dilation in layers:
            input_lengths = input_lengths - dilation * (kernel - 1)
        return input_lengths

    model._get_tdnn_output_lengths = lengths
    return probe


# -- ESPnet -------------------------------------------------------------------------------------

# Text front-ends that ESPnet's tokenizers and cleaners import at the top and use only on text.
# Loading them took 2.7 s (g2p_en, nltk) and 2 s (inflect, through tacotron_cleaner) of every
# job's start, and g2p_en's import calls nltk.download for data it lacks: on an offline node
# whose network drops packets, each call waits for the TCP timeout.
ESPNET_TEXT_MODULES = ("g2p_en", "tacotron_cleaner", "tacotron_cleaner.cleaners")


class LoadOnFirstUse(types.ModuleType):
    """Stands in for a module: imports the real one when a name is first read from it.

    A package's stand-in carries its spec, file and path, so probes do not load it:
    transformers calls ``find_spec`` on optional packages, and ``inspect.getmodule``, which
    torch calls while registering operators, reads ``__file__`` of every module.
    """

    def __init__(self, name: str, spec=None):
        super().__init__(name)
        if spec is not None:
            self.__spec__, self.__loader__, self.__file__ = spec, spec.loader, spec.origin
            self.__package__ = spec.parent
            if spec.submodule_search_locations is not None:
                self.__path__ = spec.submodule_search_locations

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        real = importlib.import_module(self.__name__)
        self.__dict__.update(real.__dict__)
        return getattr(real, name)


def import_unchecked(module: str, stand_ins: Sequence[str] = ()) -> types.ModuleType:
    """``module`` imported with typeguard's ``@typechecked`` leaving functions as written, and
    the modules ``stand_ins`` standing in (``LoadOnFirstUse``) while it is imported.

    ESPnet decorates its functions with ``@typechecked``, which recompiles each one from its
    source with argument checks added, at import: 2.7 s of a job's start for checks of ESPnet's
    calls to itself. The decorator is restored afterwards, and the stand-ins leave
    ``sys.modules``: a later ``import`` gets the real modules. When ``module`` was imported here
    and never called the decorator, the patch saved nothing (output is the same): a warning.
    """
    import typeguard

    require(TYPEGUARD_IMPORT, typeguard, "typechecked")
    fresh = module not in sys.modules
    calls = []

    def unchecked(target=None, **options):
        """``typeguard.typechecked`` that checks nothing: the decorated function itself."""
        calls.append(target)
        return target if target is not None else unchecked

    standing = {}
    for name in stand_ins:
        parent = name.rpartition(".")[0]
        if name in sys.modules or (parent and parent not in standing):
            continue  # loaded already, or under a package that is
        # A package's spec (finding it does not run it); a submodule's stand-in needs none.
        spec = None if parent else importlib.util.find_spec(name)
        if parent or spec is not None:  # a package not installed is left to the import
            standing[name] = sys.modules[name] = LoadOnFirstUse(name, spec)
    typechecked, typeguard.typechecked = typeguard.typechecked, unchecked
    try:
        imported = importlib.import_module(module)
    finally:
        typeguard.typechecked = typechecked
        for name, stand_in in standing.items():
            if sys.modules.get(name) is stand_in:
                del sys.modules[name]
    if fresh and not calls:
        log.warning("%s: patch '%s' had no effect (%s never called it): its functions are "
                    "type-checked, which slows every job's start; output is unchanged",
                    f"typeguard {installed_version('typeguard')} "
                    f"(tested: {TESTED['typeguard']})", TYPEGUARD_IMPORT.target, module)
    return imported


# -- torchaudio ---------------------------------------------------------------------------------

RESAMPLE_ATTRIBUTES = ("orig_freq", "new_freq", "gcd", "width", "kernel")
RESAMPLE_TOLERANCE = 1e-5


def require_resample_internals(resample) -> None:
    """Checks that a ``torchaudio.transforms.Resample`` has what SincResampler reads."""
    require(TORCHAUDIO_RESAMPLE, resample, *RESAMPLE_ATTRIBUTES)


def verify_resampler(resampler: Callable[[torch.Tensor], torch.Tensor], source_rate: int,
                     target_rate: int, dtype: torch.dtype, length: int, options: dict) -> None:
    """First use of a resampler built from torchaudio's internals: on ``length`` samples of
    seeded noise it must give what ``torchaudio.functional.resample`` gives, within 1e-5."""
    import torchaudio

    generator = torch.Generator().manual_seed(0)
    wave = (torch.rand(length, generator=generator, dtype=torch.float64) - 0.5).to(dtype)
    expected = torchaudio.functional.resample(wave, source_rate, target_rate, **options)
    got = resampler(wave)
    if got.shape != expected.shape:
        raise error(TORCHAUDIO_RESAMPLE, f"{source_rate} -> {target_rate} Hz gives "
                                         f"{tuple(got.shape)} samples where torchaudio gives "
                                         f"{tuple(expected.shape)}")
    worst = float((got.double() - expected.double()).abs().max())
    if not worst <= RESAMPLE_TOLERANCE:
        raise error(TORCHAUDIO_RESAMPLE, f"{source_rate} -> {target_rate} Hz differs from "
                                         f"torchaudio.functional.resample by {worst:.2e} "
                                         f"(allowed {RESAMPLE_TOLERANCE:g})")


# -- torch --------------------------------------------------------------------------------------

FLOAT32_TOLERANCE = 1e-5  # float32 sums land near 1e-7 of the largest output, TF32 near 1e-4
_exact_devices: Set[str] = set()


def float32_error(device) -> float:
    """Largest error, relative to the largest output, of a float32 matrix product and a float32
    convolution on ``device`` against float64 on the same (float32) inputs."""
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.randn(shape, generator=generator) for shape in ((64, 512), (512, 64)))
    x, w = (torch.randn(shape, generator=generator) for shape in ((2, 64, 400), (64, 64, 5)))
    worst = 0.0
    for op, inputs in ((torch.matmul, (a, b)), (F.conv1d, (x, w))):
        exact = op(*(t.double() for t in inputs))
        got = op(*(t.to(device) for t in inputs)).double().cpu()
        worst = max(worst, float((got - exact).abs().max() / exact.abs().max()))
    return worst


def exact_float32(device="cuda") -> None:
    """Turns TF32 off for this process's CUDA convolutions and matrix products, and checks it
    is off: the switches read back False, and on first use on ``device`` a float32 product and
    convolution there are float32-accurate."""
    require(TORCH_TF32, torch.backends.cudnn, "allow_tf32")
    require(TORCH_TF32, torch.backends.cuda.matmul, "allow_tf32")
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    if torch.backends.cudnn.allow_tf32 or torch.backends.cuda.matmul.allow_tf32:
        raise error(TORCH_TF32, "the switches read True after being set to False")
    key = str(torch.device(device))
    if key in _exact_devices:
        return
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        return  # nothing can run on a GPU (fbank asked for cuda computes on the CPU)
    worst = float32_error(device)
    if not worst <= FLOAT32_TOLERANCE:
        raise error(TORCH_TF32, f"float32 products on {key} are off by {worst:.1e} of their "
                                f"scale (float32 gives ~1e-7, TF32 ~1e-4)")
    _exact_devices.add(key)


def quiet_wavlm_mask_warning() -> None:
    """Silences one torch warning for this process, and no other.

    WavLM hands torch's attention a boolean key-padding mask beside its float position bias;
    torch warns that mixing the two types is deprecated and converts the mask itself. The
    converted mask gives exactly the masking asked for, so no output changes: padded WavLM
    batches equal each utterance alone (test_ssl.py and test_xvector.py, WavLM cases). Left on,
    the message would repeat in every job log of every WavLM stage."""
    warnings.filterwarnings("ignore", message="Support for mismatched key_padding_mask",
                            category=UserWarning)


# -- Silero VAD ---------------------------------------------------------------------------------

SILERO_PROBE_CHUNKS = 24  # 0.77 s: enough steps for the LSTM state to matter
SILERO_TOLERANCE = 1e-4   # the batched probabilities measured 6.2e-6 from silero's own loop
_silero_checked: Set[int] = set()


def silero_network(jit_model):
    """The network inside silero's TorchScript model whose parts the batched VAD runs
    (``speechdump/extractors/silero_vad.py``), checked to have them."""
    require(SILERO_NETWORK, jit_model, "_model", "reset_states")
    network = jit_model._model
    require(SILERO_NETWORK, network, "run_extractors", "encoder", "decoder")
    require(SILERO_NETWORK, network.decoder, "rnn", "decoder")
    return network


def check_silero_probabilities(jit_model, batched: Callable[[list], list]) -> None:
    """Checks, once per model object, that ``batched`` (a list of waveforms -> their chunk
    probabilities) gives what silero's model gives stepping through the chunks itself, on two
    probe signals of different lengths in one batch."""
    if id(jit_model) in _silero_checked:
        return
    import numpy as np

    rng = np.random.default_rng(0)
    t = np.arange(SILERO_PROBE_CHUNKS * 512) / 16000
    voiced = (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t))
              + 0.01 * rng.standard_normal(len(t))).astype(np.float32)
    probes = [voiced, voiced[: len(voiced) * 2 // 3 + 100][::-1].copy()]
    got = batched(probes)
    for probe, probs in zip(probes, got):
        jit_model.reset_states()
        padded = np.zeros(-(-len(probe) // 512) * 512, dtype=np.float32)
        padded[: len(probe)] = probe
        with torch.inference_mode():
            own = [float(jit_model(torch.from_numpy(chunk)[None], 16000))
                   for chunk in padded.reshape(-1, 512)]
        worst = float(np.max(np.abs(np.asarray(probs, dtype=np.float64) - own)))
        if not worst <= SILERO_TOLERANCE:
            raise error(SILERO_NETWORK, f"the batched speech probabilities are {worst:.1e} from "
                                        f"the model's own chunk-by-chunk loop (tolerance "
                                        f"{SILERO_TOLERANCE:g})")
    jit_model.reset_states()
    _silero_checked.add(id(jit_model))
