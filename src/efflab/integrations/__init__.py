"""Bridges from efflab's mechanisms to other libraries' models (layer 2, beside
``efflab.models``: they use ``efflab.attention`` and nothing above it).

* :mod:`efflab.integrations.huggingface`: softmax, Performer (FAVOR+) and Linformer attention
  inside Hugging Face ``transformers`` models (BERT, GPT-2, Llama-family), through the
  library's attention-function registry. Needs the optional extra ``efflab[hf]``; importing
  this package does not import ``transformers``.
"""
