"""Keyed random streams."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flwbc.rng import derive_seed, numpy_rng, torch_generator


def test_derive_seed_deterministic_and_63_bit():
    a = derive_seed(7, "data", 3, 12)
    assert a == derive_seed(7, "data", 3, 12)
    assert isinstance(a, int) and 0 <= a < 2**63


def test_derive_seed_differs():
    base = derive_seed(7, "data", 3, 12)
    assert derive_seed(8, "data", 3, 12) != base  # seed
    assert derive_seed(7, "noise", 3, 12) != base  # purpose
    assert derive_seed(7, "data", 4, 12) != base  # round
    assert derive_seed(7, "data", 3, 13) != base  # client
    assert derive_seed(7, "data", 12, 3) != base  # order of keys
    assert derive_seed(7, "data", 3) != base  # number of keys
    assert derive_seed(7) != base


@settings(max_examples=50, deadline=None)
@given(
    seed=st.integers(0, 2**32),
    keys=st.lists(st.one_of(st.integers(0, 10**6), st.text(max_size=8)), max_size=4),
)
def test_derive_seed_property(seed, keys):
    s = derive_seed(seed, *keys)
    assert s == derive_seed(seed, *keys)
    assert 0 <= s < 2**63
    assert derive_seed(seed + 1, *keys) != s


def test_derive_seed_string_and_int_keys():
    assert derive_seed(0, "client") != derive_seed(0, "server")
    assert derive_seed(0, "client", 5) == derive_seed(0, "client", 5)
    assert isinstance(derive_seed(0, "x", 0, "y", 2**40), int)


def test_negative_key_rejected():
    with pytest.raises(ValueError):
        derive_seed(0, "data", -1)


def test_torch_generator_streams():
    a = torch.rand(100, generator=torch_generator(3, "wbc", 2, 5))
    b = torch.rand(100, generator=torch_generator(3, "wbc", 2, 5))
    c = torch.rand(100, generator=torch_generator(3, "wbc", 2, 6))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # seeded with derive_seed
    g = torch.Generator().manual_seed(derive_seed(3, "wbc", 2, 5))
    assert torch.equal(torch.rand(100, generator=g), a)


def test_torch_generator_independent_of_global_state():
    torch.manual_seed(0)
    a = torch.rand(10, generator=torch_generator(1, "x"))
    torch.manual_seed(123)
    torch.rand(50)
    b = torch.rand(10, generator=torch_generator(1, "x"))
    assert torch.equal(a, b)


def test_numpy_rng_streams():
    a = numpy_rng(4, "adversarial", 9).random(20)
    b = numpy_rng(4, "adversarial", 9).random(20)
    c = numpy_rng(4, "adversarial", 10).random(20)
    assert (a == b).all() and not (a == c).all()
