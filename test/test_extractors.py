"""The extractor registry: names, option checks, and exact float32 on GPUs."""

import pytest
import torch

from speechdump.errors import OptionError
from speechdump.extractors import available, load_extractor


def test_unknown_toolkit_and_option_are_named():
    with pytest.raises(ValueError, match="unknown toolkit 'ivector'; choose from .*fbank"):
        load_extractor("ivector")
    with pytest.raises(OptionError, match="fbank takes no option --layers"):
        load_extractor("fbank", layers="6")
    assert {"resemblyzer", "speechbrain", "espnet", "rawnet", "ssl", "fbank",
            "mfcc"} <= set(available())


@pytest.fixture
def tf32_flags():
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_a_gpu_extractor_turns_tf32_off(tf32_flags):
    # TF32 made padded batches differ from single utterances by 1e-2 relative on an H200.
    load_extractor("fbank", device="cpu")
    assert torch.backends.cudnn.allow_tf32  # a CPU run leaves the process's settings alone
    load_extractor("fbank", device="cuda:0")  # fbank keeps its work on the CPU: no GPU needed
    assert not torch.backends.cudnn.allow_tf32
    assert not torch.backends.cuda.matmul.allow_tf32


def test_tf32_stays_off_when_the_toolkit_turns_it_on(tf32_flags, monkeypatch):
    # `import speechbrain` turns TF32 on, and extractors import their toolkit when they are
    # built: a GPU stage's SpeechBrain embeddings depended on the batch by 6e-4 on an H200.
    from speechbrain.utils.quirks import allow_tf32

    from speechdump.extractors.kaldi_feats import FbankExtractor

    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    build = FbankExtractor.__init__

    def importing_speechbrain(self, *args, **kwargs):
        build(self, *args, **kwargs)
        allow_tf32()

    monkeypatch.setattr(FbankExtractor, "__init__", importing_speechbrain)
    load_extractor("fbank", device="cuda")
    assert not torch.backends.cudnn.allow_tf32
    assert not torch.backends.cuda.matmul.allow_tf32
