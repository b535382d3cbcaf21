"""Architecture shapes of the catalog's model families: what memory estimates and benchmarks need.

The hub entries' numbers are copied from their published `config.json` files, so an estimate
(or a random-weight benchmark model of the real shape) needs no download. `shape_config` turns a
shape back into a transformers config: what the benchmark's random-weight models (`pricer.bench.shaped`)
and the toys (`pricer.model.toys`) are built from.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from pricer.errors import SpecError


@dataclass(frozen=True)
class ModelShape:
    """The dimensions of a decoder-only transformer.

    Args:
        model_type: the transformers `model_type` ("llama", "qwen2", "gemma2", "gemma3_text").
        head_dim: per-head width (Gemma's differs from hidden // heads).
        tied: whether the output head shares the embedding matrix.
        softcap: whether final logits are soft-capped (Gemma 2: one more fp32 copy of the logits).
    """

    model_type: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    softcap: bool = False

    @property
    def linear_params(self) -> int:
        """Parameters in the per-layer linear projections (what 4-bit quantization shrinks)."""
        attn = self.hidden * self.head_dim * (2 * self.heads + 2 * self.kv_heads)
        mlp = 3 * self.hidden * self.intermediate
        return self.layers * (attn + mlp)

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied else 2)

    def module_dims(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of each projection, by its usual module name."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        return {
            "q_proj": (self.hidden, q), "k_proj": (self.hidden, kv), "v_proj": (self.hidden, kv),
            "o_proj": (q, self.hidden), "gate_proj": (self.hidden, self.intermediate),
            "up_proj": (self.hidden, self.intermediate), "down_proj": (self.intermediate, self.hidden),
        }

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_config(cls, config) -> ModelShape:
        """Read a transformers config (text config of multimodal ones)."""
        cfg = config.get_text_config() if hasattr(config, "get_text_config") else config
        heads = cfg.num_attention_heads
        return cls(
            model_type=cfg.model_type,
            hidden=cfg.hidden_size,
            intermediate=cfg.intermediate_size,
            layers=cfg.num_hidden_layers,
            heads=heads,
            kv_heads=getattr(cfg, "num_key_value_heads", None) or heads,
            head_dim=getattr(cfg, "head_dim", None) or cfg.hidden_size // heads,
            vocab=cfg.vocab_size,
            tied=bool(getattr(cfg, "tie_word_embeddings", False)),
            softcap=bool(getattr(cfg, "final_logit_softcapping", None)),
        )


# Published config.json values (hidden, intermediate, layers, heads, kv heads, head dim, vocab).
SHAPES: dict[str, ModelShape] = {
    "llama-3.1-8b": ModelShape("llama", 4096, 14336, 32, 32, 8, 128, 128256, tied=False),
    "qwen2.5-7b": ModelShape("qwen2", 3584, 18944, 28, 28, 4, 128, 152064, tied=False),
    "gemma-2-2b": ModelShape("gemma2", 2304, 9216, 26, 8, 4, 256, 256000, tied=True, softcap=True),
    "gemma-3-270m": ModelShape("gemma3_text", 640, 2048, 18, 4, 1, 256, 262144, tied=True),
    "smollm2-135m-instruct": ModelShape("llama", 576, 1536, 30, 9, 3, 64, 49152, tied=True),
}
for _base in ("llama-3.1-8b", "qwen2.5-7b"):
    SHAPES[f"{_base}-instruct"] = SHAPES[_base]
SHAPES["gemma-2-2b-it"] = SHAPES["gemma-2-2b"]


# Config fields of the published checkpoints that are not in ModelShape (speed or behaviour).
_FAMILY_CONFIG = {
    "llama": {"rms_norm_eps": 1e-5, "max_position_embeddings": 131072, "rope_parameters": {
        "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}},
    "qwen2": {"rms_norm_eps": 1e-6, "max_position_embeddings": 131072, "use_sliding_window": False,
              "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0}},
    "gemma2": {"final_logit_softcapping": 30.0, "attn_logit_softcapping": 50.0, "sliding_window": 4096,
               "hidden_activation": "gelu_pytorch_tanh", "max_position_embeddings": 8192},
}


def shape_config(shape: ModelShape):
    """A transformers config of `shape` (a model type the benchmark knows)."""
    from transformers import AutoConfig

    if shape.model_type not in _FAMILY_CONFIG:
        raise SpecError(f"bench: no random-weight builder for model type {shape.model_type!r} "
                        f"(known: {', '.join(_FAMILY_CONFIG)})")
    # Gemma 2 2B scales attention scores by its head_dim (a field of its own in the config)
    scalar = {"query_pre_attn_scalar": shape.head_dim} if shape.model_type == "gemma2" else {}
    return AutoConfig.for_model(
        shape.model_type, hidden_size=shape.hidden, intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers, num_attention_heads=shape.heads, num_key_value_heads=shape.kv_heads,
        head_dim=shape.head_dim, vocab_size=shape.vocab, tie_word_embeddings=shape.tied,
        **_FAMILY_CONFIG[shape.model_type], **scalar)
