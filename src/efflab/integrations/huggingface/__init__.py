"""efflab attention inside Hugging Face ``transformers`` models (extra ``efflab[hf]``).

Performer (arXiv 2009.14794) and Linformer (arXiv 2006.04768) as a ``transformers``
attention implementation, for BERT, GPT-2 and Llama-family models built from configs::

    from transformers import GPT2Config, GPT2LMHeadModel
    from efflab.integrations.huggingface import FavorCache, use_efflab_attention

    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=64, n_head=4, attn_pdrop=0.0))
    use_efflab_attention(model, "performer", num_features=128)
    ids = model.generate(prompt, max_new_tokens=20, cache=FavorCache())  # O(1) per token

Importing this package registers the implementation ``"efflab"`` with
``transformers.AttentionInterface`` (and its mask builder with ``AttentionMaskInterface``).
See docs/huggingface.md.
"""

import transformers

if int(transformers.__version__.split(".")[0]) < 5:
    # the cache layers, the mask registry and `generate(cache=...)` used here are transformers 5
    raise ImportError("efflab.integrations.huggingface needs transformers >= 5 (tested with "
                      f"5.24.0), found {transformers.__version__}")

from efflab.integrations.huggingface.attention import (  # noqa: E402
    ATTENTIONS,
    IMPLEMENTATION,
    attention_modules,
    efflab_attention_forward,
    expand_kv_heads,
    use_efflab_attention,
)
from efflab.integrations.huggingface.cache import FavorCache, FavorCacheLayer
from efflab.integrations.huggingface.masks import allowed_pattern, key_padding_from_mask
from efflab.integrations.huggingface.models import (
    ARCHITECTURES,
    LogitsOf,
    build_measurable,
    build_model,
    load_pretrained,
)

__all__ = [
    "ARCHITECTURES", "ATTENTIONS", "IMPLEMENTATION", "FavorCache", "FavorCacheLayer",
    "LogitsOf", "allowed_pattern", "attention_modules", "build_measurable", "build_model",
    "efflab_attention_forward", "expand_kv_heads", "key_padding_from_mask", "load_pretrained",
    "use_efflab_attention",
]
