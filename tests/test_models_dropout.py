"""The CPU-cheap dropout: keep rate, scaling, determinism, eval mode, gradients."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from msalign.models.dropout import Dropout, dropout


def test_keep_rate_and_scale():
    x = torch.ones(200_000)
    torch.manual_seed(0)
    y = dropout(x, 0.1)
    assert abs((y > 0).float().mean().item() - 0.9) < 0.005
    assert abs(y.mean().item() - 1.0) < 0.01
    values = torch.unique(y)
    assert len(values) == 2 and values[0] == 0 and abs(values[1].item() - 1 / 0.9) < 1e-4


def test_identity_cases():
    x = torch.ones(20_000)
    assert dropout(x, 0.1, training=False) is x and dropout(x, 0.0) is x
    assert bool((dropout(x, 1.0) == 0).all())
    module = Dropout(0.3).eval()
    assert module(x) is x


def test_reproducible_by_seed():
    x = torch.randn(100, 100)
    torch.manual_seed(3)
    first = dropout(x, 0.5)
    torch.manual_seed(3)
    assert torch.equal(first, dropout(x, 0.5))


def test_gradient_is_the_mask():
    x = torch.ones(10_000, requires_grad=True)
    y = dropout(x, 0.5)
    y.sum().backward()
    assert set(x.grad.unique().tolist()) == {0.0, 2.0}
    assert torch.equal(x.grad, y.detach())


def test_small_tensors_use_torch():
    x = torch.ones(100)
    torch.manual_seed(1)
    expected = F.dropout(x, 0.5, True)
    torch.manual_seed(1)
    assert torch.equal(dropout(x, 0.5), expected)
