"""Driven by the registry: adding a variant or an implementation adds it to every test here."""

from __future__ import annotations

from vitbench.models.attention import ATTENTION


def test_a_new_attention_is_one_class_in_one_file(monkeypatch, workdir, tiny_mnist):
    """What ARCHITECTURE.md promises: a subclass of Attention and one ATTENTION entry, and the registry,
    the configs and the command line take it."""
    from tests.helpers import TINY, EinsumAttention, invoke, runs

    monkeypatch.setitem(ATTENTION, "einsum", EinsumAttention)
    res = invoke("run", "--attention", "einsum", "--epochs", "1", "--max-steps", "2", *TINY)
    assert res.exit_code == 0, res.output
    (run,) = runs()
    assert run.data.params["model.attention"] == "einsum" and run.data.tags["part.attention"] == "einsum"

