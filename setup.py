from setuptools import find_packages, setup

setup(
    name="speechdump",
    version="0.1.0",
    description="Offline, corpus-scale extraction of speech representations into Kaldi ark/scp",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9",
    packages=find_packages(include=["speechdump", "speechdump.*"]),
    install_requires=[
        "numpy",
        "torch",
        "torchaudio",
        "kaldiio",
        "soundfile",
        "threadpoolctl",
        "tqdm",
    ],
    extras_require={
        "spk": ["resemblyzer", "speechbrain"],
        "espnet": ["espnet"],
        "ssl": ["transformers", "scikit-learn"],
        "report": ["matplotlib", "scikit-learn"],
        "test": ["pytest"],
    },
)
