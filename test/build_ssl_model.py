"""Random-init self-supervised speech encoders in the transformers layout, built offline.

``build(dest, kind, norm)`` writes what ``AutoModel.from_pretrained(dest)`` and
``AutoFeatureExtractor.from_pretrained(dest)`` load: the real architecture (``HubertModel``,
``Wav2Vec2Model``, ``WavLMModel``, ``Data2VecAudioModel``) from its transformers config class,
with seeded random weights, and a ``Wav2Vec2FeatureExtractor`` configured as the hub models of
that norm are (``do_normalize``; ``return_attention_mask`` only for layer-norm models).

``norm="group"``: the base-model layout (hubert-base, wav2vec2-base, wavlm-base): group norm in
the first convolution, post-norm transformer. ``norm="layer"``: the large-model layout
(hubert-large, wav2vec2-large-lv60, wavlm-large): layer norm in every convolution and a
pre-norm ("stable layer norm") transformer. data2vec-audio exists only with layer norm.

``small=True`` keeps the real convolution kernels and strides (so frame rate, receptive field
and lengths are the real ones) and the real positional convolutions, at small widths, for
tests. ``small=False`` gives base size: 768 hidden, 12 layers, 12 heads, 3072 feed-forward,
512-channel convolutions (about 95 M parameters), for benchmarks.

Weights: transformers' own initialisation with ``initializer_range`` raised from 0.02 to 0.1,
and every norm's scale and shift drawn around 1 and 0, so that each layer changes its input
visibly and a mistake in lengths, padding or normalisation shows in the outputs instead of
being washed out by near-identity layers. Nothing downloads.
"""

from pathlib import Path

import torch

KINDS = ("hubert", "wav2vec2", "wavlm", "data2vec")


def _config(kind: str, norm: str, small: bool):
    from transformers import Data2VecAudioConfig, HubertConfig, Wav2Vec2Config, WavLMConfig

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    if norm not in ("group", "layer"):
        raise ValueError(f"norm must be 'group' or 'layer', not {norm!r}")
    if kind == "data2vec" and norm != "layer":
        raise ValueError("data2vec-audio has layer norm in every convolution; use norm='layer'")
    if small:
        size = dict(hidden_size=96, num_hidden_layers=4, num_attention_heads=4,
                    intermediate_size=192, conv_dim=(64,) * 7)
    else:
        size = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                    intermediate_size=3072, conv_dim=(512,) * 7)
    common = dict(size, conv_stride=(5, 2, 2, 2, 2, 2, 2), conv_kernel=(10, 3, 3, 3, 3, 2, 2),
                  conv_bias=norm == "layer", num_conv_pos_embedding_groups=16,
                  initializer_range=0.1, layer_norm_eps=1e-5)
    if kind == "data2vec":
        return Data2VecAudioConfig(**common, conv_pos_kernel_size=19, num_conv_pos_embeddings=5)
    common.update(feat_extract_norm=norm, do_stable_layer_norm=norm == "layer",
                  num_conv_pos_embeddings=128)
    if kind == "hubert":
        return HubertConfig(**common)
    if kind == "wavlm":
        return WavLMConfig(**common, num_buckets=320, max_bucket_distance=800)
    return Wav2Vec2Config(**common)


def perturb_norms(model: torch.nn.Module, seed: int) -> None:
    """Layer and group norms away from their identity initialisation (scales 1 +- 0.2, biases
    +- 0.2), so that what they normalise over shows in the outputs."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.LayerNorm, torch.nn.GroupNorm)) and \
                    module.weight is not None:
                module.weight.copy_(1 + 0.2 * torch.randn(module.weight.shape, generator=generator))
                module.bias.copy_(0.2 * torch.randn(module.bias.shape, generator=generator))


def build(dest, kind: str = "hubert", norm: str = "group", small: bool = True,
          seed: int = 0) -> Path:
    """Writes the model and its feature extractor to ``dest``; returns ``dest``."""
    from transformers import AutoModel, Wav2Vec2FeatureExtractor

    dest = Path(dest)
    config = _config(kind, norm, small)
    torch.manual_seed(seed)
    model = AutoModel.from_config(config)
    perturb_norms(model, seed + 1)
    model.eval()
    model.save_pretrained(dest)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0,
                             do_normalize=True, return_attention_mask=norm == "layer",
                             ).save_pretrained(dest)
    return dest


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("dest")
    p.add_argument("--kind", default="hubert", choices=KINDS)
    p.add_argument("--norm", default="group", choices=("group", "layer"))
    p.add_argument("--base", action="store_true", help="base size instead of small")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    print(build(args.dest, args.kind, args.norm, small=not args.base, seed=args.seed))
