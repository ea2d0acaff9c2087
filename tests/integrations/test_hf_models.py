"""efflab attention inside tiny BERT, GPT-2 and Llama models built from configs."""

import copy

import pytest
import torch
from transformers import (
    BertConfig,
    BertForMaskedLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
)

from efflab.attention import PerformerAttention
from efflab.integrations.huggingface import (
    FavorCache,
    attention_modules,
    build_measurable,
    build_model,
    expand_kv_heads,
    load_pretrained,
    use_efflab_attention,
)

VOCAB = 40


def _config(arch):
    if arch == "gpt2":
        return GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=64, vocab_size=VOCAB,
                          attn_pdrop=0.0, resid_pdrop=0.0, embd_pdrop=0.0, bos_token_id=1,
                          eos_token_id=1)
    if arch == "bert":
        return BertConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=2,
                          intermediate_size=64, max_position_embeddings=64, vocab_size=VOCAB,
                          attention_probs_dropout_prob=0.0, hidden_dropout_prob=0.0,
                          pad_token_id=0)
    return LlamaConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=4,
                       num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64,
                       vocab_size=VOCAB, bos_token_id=1, eos_token_id=1, pad_token_id=0)


CLASSES = {"gpt2": GPT2LMHeadModel, "bert": BertForMaskedLM, "llama": LlamaForCausalLM}


def _model(arch, seed=0):
    torch.manual_seed(seed)
    model = CLASSES[arch](_config(arch)).double().eval()
    model.set_attn_implementation("sdpa")
    return model


def _ids(batch=3, seq=9, seed=1):
    return torch.randint(2, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(seed))


def _right_padding(batch=3, seq=9):
    """Rows of lengths seq, seq - 3, seq - 5 (right padding keeps positions of real tokens)."""
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[1, seq - 3:] = 0
    mask[2, seq - 5:] = 0
    return mask


def _padding(arch):
    """(attention_mask, extra forward kwargs): right padding for BERT; left padding with
    position ids for the decoders, where right padding could not show a leak (a causal query
    never sees the keys after it)."""
    mask = _right_padding()
    if arch == "bert":
        return mask, {}
    mask = mask.flip(-1)
    return mask, {"position_ids": (mask.cumsum(-1) - 1).clamp_min(0)}


@pytest.mark.parametrize("arch", ["gpt2", "bert", "llama"])
def test_softmax_equals_hf_sdpa_in_float64(arch):
    hf = _model(arch)
    ours = use_efflab_attention(copy.deepcopy(hf), "softmax")
    assert ours.config._attn_implementation == "efflab"
    ids = _ids()
    mask, extra = _padding(arch)
    with torch.no_grad():
        torch.testing.assert_close(ours(ids).logits, hf(ids).logits, rtol=1e-10, atol=1e-10)
        want = hf(ids, attention_mask=mask, **extra).logits
        got = ours(ids, attention_mask=mask, **extra).logits
        real = mask.bool()
        torch.testing.assert_close(got[real], want[real], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("arch", ["gpt2", "bert", "llama"])
def test_performer_approaches_softmax_as_features_grow(arch):
    hf = _model(arch)
    ids = _ids()
    with torch.no_grad():
        want = hf(ids).logits
        errs = []
        for m in (8, 2048):
            ours = use_efflab_attention(copy.deepcopy(hf), "performer", num_features=m, seed=3)
            errs.append((ours(ids).logits - want).abs().max().item())
    assert errs[1] < errs[0] / 3
    assert errs[1] < 0.05


@pytest.mark.parametrize("arch,attention", [
    ("gpt2", "softmax"), ("gpt2", "performer"), ("bert", "softmax"), ("bert", "performer"),
    ("bert", "linformer"), ("llama", "softmax"), ("llama", "performer")])
def test_padded_batch_gives_the_unpadded_outputs(arch, attention):
    model = use_efflab_attention(_model(arch), attention,
                                 **({"num_features": 16} if attention == "performer" else {}))
    ids = _ids()
    mask, extra = _padding(arch)
    with torch.no_grad():
        padded = model(ids, attention_mask=mask, **extra).logits
        for row in range(ids.shape[0]):
            real = mask[row].bool()
            alone = model(ids[row:row + 1, real]).logits[0]
            torch.testing.assert_close(padded[row, real], alone, rtol=1e-9, atol=1e-9)


def _greedy_reference(model, ids, mask, steps):
    """Greedy decoding by a full forward over the whole sequence at each step, no cache."""
    logits_seen = []
    for _ in range(steps):
        pos = (mask.cumsum(-1) - 1).clamp_min(0)
        logits = model(ids, attention_mask=mask, position_ids=pos, use_cache=False).logits[:, -1]
        logits_seen.append(logits)
        nxt = logits.argmax(-1, keepdim=True)
        ids = torch.cat([ids, nxt], -1)
        mask = torch.cat([mask, torch.ones_like(nxt)], -1)
    return ids, logits_seen


@pytest.mark.parametrize("arch,attention", [("gpt2", "performer"), ("llama", "performer"),
                                            ("llama", "softmax")])
def test_generate_equals_the_step_by_step_reference(arch, attention):
    model = use_efflab_attention(_model(arch), attention,
                                 **({"num_features": 32} if attention == "performer" else {}))
    ids = _ids(batch=2, seq=5)
    mask = torch.ones_like(ids)
    mask[1, :2] = 0  # left padding, as generate wants it
    steps = 6
    with torch.no_grad():
        want_ids, want_logits = _greedy_reference(model, ids, mask, steps)
        # efflab's recurrent state (Performer only), HF's key/value cache
        for cache in (FavorCache(), None) if attention == "performer" else (None,):
            out = model.generate(ids, attention_mask=mask, max_new_tokens=steps,
                                 do_sample=False, pad_token_id=0, eos_token_id=None,
                                 output_logits=True, return_dict_in_generate=True,
                                 **({"cache": cache} if cache is not None else {}))
            assert torch.equal(out.sequences, want_ids)
            for got, want in zip(out.logits, want_logits):
                # generate hands logits back in float32
                torch.testing.assert_close(got.double(), want, rtol=1e-6, atol=1e-6)


def test_favor_cache_keeps_a_state_of_fixed_size_and_no_keys():
    model = use_efflab_attention(_model("llama"), "performer", num_features=16)
    ids = _ids(batch=2, seq=4)
    cache = FavorCache()
    with torch.no_grad():
        out = model(ids, cache=cache, use_cache=True)
        shapes = [tuple(layer.state.kv.shape) for layer in cache.layers]
        nxt = out.logits[:, -1:].argmax(-1)
        for _ in range(5):
            nxt = model(nxt, cache=cache, use_cache=True).logits[:, -1:].argmax(-1)
    assert len(cache.layers) == 2 and cache.get_seq_length() == 9
    # (batch, query heads, features, head_dim + 1): independent of the length
    assert [tuple(layer.state.kv.shape) for layer in cache.layers] == shapes == [(2, 4, 16, 9)] * 2
    assert all(layer.keys is None and layer.values is None for layer in cache.layers)
    with pytest.raises(ValueError, match="cannot be cropped"):
        cache.crop(-1)


def test_grouped_kv_heads_repeat_like_hf():
    from transformers.integrations.sdpa_attention import repeat_kv

    k, v = torch.randn(2, 3, 5, 4), torch.randn(2, 3, 5, 4)
    ek, ev = expand_kv_heads(k, v, 6)
    assert torch.equal(ek, repeat_kv(k, 2)) and torch.equal(ev, repeat_kv(v, 2))
    with pytest.raises(ValueError, match="multiple of kv heads 3"):
        expand_kv_heads(k, v, 4)


@pytest.mark.parametrize("arch,attention", [("gpt2", "performer"), ("bert", "linformer"),
                                            ("llama", "performer")])
def test_gradients_are_finite_and_reach_every_layer(arch, attention):
    model = use_efflab_attention(_model(arch), attention).train()
    ids, mask = _ids(), _right_padding()
    loss = model(ids, attention_mask=mask, labels=ids).loss
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    for module in attention_modules(model):  # the query projection of each layer learns
        q = getattr(module, "q_proj", None) or getattr(module, "query", None) or module.c_attn
        assert q.weight.grad.abs().sum() > 0


def test_features_are_per_layer_state_saved_and_loaded(tmp_path):
    model = use_efflab_attention(_model("gpt2"), "performer", num_features=16, seed=5)
    keys = [k for k in model.state_dict() if k.endswith("efflab_attention.projection")]
    assert len(keys) == 2
    w0, w1 = (model.state_dict()[k] for k in keys)
    assert not torch.equal(w0, w1)  # each layer draws its own features
    assert all(isinstance(m.efflab_attention, PerformerAttention)
               for m in attention_modules(model))
    model.save_pretrained(tmp_path / "ckpt")
    loaded = load_pretrained(GPT2LMHeadModel, tmp_path / "ckpt", dtype=torch.float64).eval()
    assert loaded.config._attn_implementation == "efflab"
    for k in keys:
        assert torch.equal(loaded.state_dict()[k], model.state_dict()[k])
    ids = _ids()
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=0)
    # a plain HF folder (no efflab attention) loads as HF would load it
    _model("bert").save_pretrained(tmp_path / "plain")
    plain = load_pretrained(BertForMaskedLM, tmp_path / "plain")
    assert plain.config._attn_implementation != "efflab"


def test_refusals_name_what_is_wrong():
    with pytest.raises(ValueError, match="Linformer's projection mixes future positions"):
        use_efflab_attention(_model("gpt2"), "linformer")
    with pytest.raises(ValueError, match="attention must be one of"):
        use_efflab_attention(_model("gpt2"), "flash")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['k'\] for attention='performer'"):
        use_efflab_attention(_model("gpt2"), "performer", k=4)
    dropped = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=VOCAB,
                                         attn_pdrop=0.1)).train()
    use_efflab_attention(dropped, "performer", num_features=8)
    with pytest.raises(ValueError, match=r"dropout must be 0 .*dropout=0\.1"):
        dropped(_ids())
    model = use_efflab_attention(_model("bert"), "performer", num_features=8)
    window = torch.ones(3, 1, 9, 9, dtype=torch.double).triu(3) * torch.finfo(torch.double).min
    with pytest.raises(ValueError, match="not key padding plus bidirectional"):
        model(_ids(), attention_mask=window)


def test_build_model_by_name():
    a = build_model("gpt2", "performer", n_layer=1, num_features=16, seed=2)
    b = build_model("gpt2", "performer", n_layer=1, num_features=16, seed=2)
    assert a.config.n_layer == 1 and not a.training
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    state = torch.random.get_rng_state()
    build_model("llama", "softmax")
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's stream is untouched
    with pytest.raises(ValueError, match="arch must be one of"):
        build_model("t5")
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['num_layers'\]"):
        build_model("gpt2", num_layers=2)


def test_measurable_wrapper_is_tensor_in_tensor_out():
    wrapped = build_measurable("bert", attention="linformer", k=8, num_hidden_layers=1)
    ids = torch.randint(0, 256, (2, 12))
    with torch.no_grad():
        out = wrapped(ids)
        assert isinstance(out, torch.Tensor) and out.shape == (2, 12, 256)
        torch.testing.assert_close(out, wrapped.model(ids).logits)
