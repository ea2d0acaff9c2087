"""FLOPs equal hand-computed formulas (1 multiply-add = 2 FLOPs); no op silently zero."""

import math

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from efflab.measure import count_flops, make_inference_step, make_train_step
from efflab.models import create_model


def forward_flops(model, *inputs):
    return count_flops(make_inference_step(model, inputs))[1]


def train_flops(model, *inputs):
    return count_flops(make_train_step(model, inputs))[1]


def test_linear_forward_and_training_step():
    b, i, o = 7, 13, 5
    lin = nn.Linear(i, o)
    assert forward_flops(lin, torch.randn(b, i)).total == 2 * b * i * o
    # backward: grad of the weight only (the input needs no gradient)
    assert train_flops(lin, torch.randn(b, i)).total == 2 * b * i * o + 2 * b * i * o


def test_mlp_forward_and_training_step():
    b, widths = 6, [40, 30, 20, 10]
    model = nn.Sequential(nn.Linear(40, 30), nn.ReLU(), nn.Linear(30, 20), nn.ReLU(),
                          nn.Linear(20, 10))
    pairs = list(zip(widths[:-1], widths[1:]))
    fwd = sum(2 * b * i * o for i, o in pairs)
    grad_w = sum(2 * b * i * o for i, o in pairs)
    grad_x = sum(2 * b * i * o for i, o in pairs[1:])  # no input gradient for layer 1
    assert forward_flops(model, torch.randn(b, 40)).total == fwd
    assert train_flops(model, torch.randn(b, 40)).total == fwd + grad_w + grad_x


def test_registered_mlp_forward():
    b = 3
    model = create_model("mlp", in_features=40, width=100, depth=2, num_classes=10)
    expected = 2 * b * (40 * 100 + 100 * 100 + 100 * 10)
    assert forward_flops(model, torch.randn(b, 40)).total == expected


def test_conv2d_and_conv1d_forward():
    b, cin, cout, k, h, w = 2, 3, 8, 3, 10, 12
    conv = nn.Conv2d(cin, cout, k, stride=2, padding=1)
    h_out, w_out = (h + 2 - k) // 2 + 1, (w + 2 - k) // 2 + 1
    expected = 2 * b * cout * h_out * w_out * cin * k * k
    assert forward_flops(conv, torch.randn(b, cin, h, w)).total == expected

    conv1 = nn.Conv1d(4, 6, 5)  # no padding: 20 - 5 + 1 outputs
    assert forward_flops(conv1, torch.randn(3, 4, 20)).total == 2 * 3 * 6 * 16 * 4 * 5


def test_conv_training_step_counts_weight_gradient():
    b, cin, cout, k, n = 2, 3, 4, 3, 9
    conv = nn.Conv1d(cin, cout, k, padding=1)
    fwd = 2 * b * cout * n * cin * k
    # backward: weight gradient (same size as the forward); no input gradient
    assert train_flops(conv, torch.randn(b, cin, n)).total == 2 * fwd


class MatmulAttention(nn.Module):
    """Single-head attention written with matmuls: the slow, obvious reference."""

    def forward(self, q, k, v):
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        return scores.softmax(-1) @ v


class SDPAttention(nn.Module):
    def forward(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v)


@settings(max_examples=8, deadline=None)
@given(b=st.integers(1, 3), h=st.integers(1, 3), sq=st.integers(1, 9), sk=st.integers(1, 9),
       d=st.integers(1, 6), dv=st.integers(1, 6))
def test_sdpa_counted_like_hand_formula_and_matmul_reference(b, h, sq, sk, d, dv):
    g = torch.Generator().manual_seed(b * 1000 + sq * 10 + sk)
    q = torch.randn(b, h, sq, d, generator=g, dtype=torch.float64)
    k = torch.randn(b, h, sk, d, generator=g, dtype=torch.float64)
    v = torch.randn(b, h, sk, dv, generator=g, dtype=torch.float64)
    expected = 2 * b * h * sq * sk * d + 2 * b * h * sq * sk * dv
    ref_out, ref = count_flops(lambda: MatmulAttention()(q, k, v))
    out, fused = count_flops(lambda: SDPAttention()(q, k, v))
    torch.testing.assert_close(out, ref_out)
    assert ref.total == expected
    assert fused.total == expected

    def backward(module):
        qq, kk, vv = (t.clone().requires_grad_() for t in (q, k, v))
        return lambda: module(qq, kk, vv).sum().backward()

    assert count_flops(backward(MatmulAttention()))[1].total == 3 * expected
    assert count_flops(backward(SDPAttention()))[1].total == 3 * expected


def test_multihead_attention_module():
    b, n, e, heads = 2, 5, 8, 2
    mha = nn.MultiheadAttention(e, heads, batch_first=True)
    x = torch.randn(b, n, e)
    projections = 4 * (2 * b * n * e * e)  # q, k, v and output
    attention = 2 * b * n * n * e + 2 * b * n * n * e  # QK^T and PV over all heads
    fc = count_flops(lambda: mha(x, x, x, need_weights=False))[1]
    assert fc.total == projections + attention


def test_op_without_formula_is_listed_with_its_call_count_never_silently_zero():
    class CumsumNet(nn.Module):
        def forward(self, x):
            return torch.cumsum(torch.cumsum(x, 1), 1).relu()

    fc = forward_flops(CumsumNet(), torch.randn(3, 4))
    assert fc.total == 0
    assert fc.uncounted_ops == {"aten.cumsum": 2, "aten.relu": 1}
    assert "2 FLOPs" in fc.convention


def test_views_are_not_reported_as_uncounted_arithmetic():
    class Reshaper(nn.Module):
        def forward(self, x):
            return x.view(2, -1).t().contiguous().unsqueeze(0)

    fc = forward_flops(Reshaper(), torch.randn(2, 6))
    assert fc.uncounted_ops == {}
    assert fc.free_op_calls >= 3


def test_elementwise_ops_in_a_real_model_are_listed():
    model = nn.Sequential(nn.Linear(4, 4), nn.GELU(), nn.LayerNorm(4), nn.Linear(4, 2))
    fc = forward_flops(model, torch.randn(3, 4))
    assert fc.total == 2 * 3 * (4 * 4 + 4 * 2)
    assert fc.by_op == {"aten.addmm": fc.total}
    assert fc.uncounted_ops["aten.gelu"] == 1
    assert any("layer_norm" in op for op in fc.uncounted_ops)
