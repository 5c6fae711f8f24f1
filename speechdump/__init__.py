"""speechdump: offline, corpus-scale extraction of speech representations into Kaldi ark/scp."""

__version__ = "0.1.0"
