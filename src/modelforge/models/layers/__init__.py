"""Building blocks shared by the sequence models: attention, norms, positions and feed-forward blocks.

Not a model family: ``modelforge.models`` skips this package when it auto-imports families.
"""

from modelforge.models.layers.attention import KVCache, MultiHeadAttention, build_mask
from modelforge.models.layers.mlp_blocks import FeedForward, SwiGLU, make_mlp
from modelforge.models.layers.norms import LayerNorm, RMSNorm, l2_normalize, make_norm
from modelforge.models.layers.positions import (
    LearnedPositions,
    RotaryEmbedding,
    SinusoidalPositions,
    make_positions,
    sinusoid_table,
)

__all__ = [
    "FeedForward",
    "KVCache",
    "LayerNorm",
    "LearnedPositions",
    "MultiHeadAttention",
    "RMSNorm",
    "RotaryEmbedding",
    "SinusoidalPositions",
    "SwiGLU",
    "build_mask",
    "l2_normalize",
    "make_mlp",
    "make_norm",
    "make_positions",
    "sinusoid_table",
]
