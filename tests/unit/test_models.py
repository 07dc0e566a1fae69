"""Driven by the registry: adding a variant or an implementation adds it to every test here."""

from __future__ import annotations

import itertools
import re

import pytest
import torch

from vitbench import VitbenchError, create_model, list_variants, names
from vitbench.models import PRESETS, ViTConfig
from vitbench.models.attention import ATTENTION
from vitbench.models.mlp import MLPS
from vitbench.models.patchify import PATCHIFY

SMALL = dict(depth=2)  # fast enough for the loop implementations on a CPU


def batch(preset: str, n: int = 3, dtype=torch.float32) -> torch.Tensor:
    p = PRESETS[preset]
    return torch.randn(n, p["in_chans"], p["image_size"], p["image_size"], dtype=dtype,
                       generator=torch.Generator().manual_seed(0))


def _outputs_and_grads(model, x):
    model.zero_grad()
    out = model(x)
    (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype, device=out.device).view_as(out)).sum().backward()
    return out.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters()}


PARTS = {"attention": ATTENTION, "patchify": PATCHIFY, "mlp": MLPS}


def by_function(registry: dict) -> list[list[str]]:
    """The implementations of a part grouped by the function each computes (its ``computes``)."""
    groups: dict[str, list[str]] = {}
    for name, cls in registry.items():
        groups.setdefault(cls.computes, []).append(name)
    return list(groups.values())


GROUPS = [(part, impls) for part, registry in PARTS.items() for impls in by_function(registry) if len(impls) > 1]


EACH = [(part, impl) for part, registry in PARTS.items() for impl in registry]


def assert_same_function(variant: str, part: str, impls: list[str], preset: str = "mnist") -> None:
    """Outputs and gradients agree in float64; an attention without a CPU backward (flex) is compared on its
    outputs here and on its gradients by the CUDA test below."""
    x = batch(preset, dtype=torch.float64)
    torch.manual_seed(1)
    if part == "attention":  # the fused Triton kernel runs on the CPU only in Triton's interpreter (conftest)
        impls = [i for i in impls if not ATTENTION[i].unavailable(torch.device("cpu"), training=False)]
    models = {impl: create_model(variant, preset, **SMALL, **{part: impl}).double() for impl in impls}
    state = models[impls[0]].state_dict()
    results = {}
    for impl, m in models.items():
        m.load_state_dict(state)
        if part == "attention" and not ATTENTION[impl].cpu_backward:
            with torch.no_grad():
                results[impl] = (m(x), None)
        else:
            results[impl] = _outputs_and_grads(m, x)
    for a, b in itertools.combinations(impls, 2):
        (oa, ga), (ob, gb) = results[a], results[b]
        torch.testing.assert_close(oa, ob, rtol=1e-10, atol=1e-12, msg=f"{a} vs {b}: outputs differ")
        if ga is None or gb is None:
            continue
        assert ga.keys() == gb.keys()
        for name in ga:
            torch.testing.assert_close(ga[name], gb[name], rtol=1e-9, atol=1e-12,
                                       msg=f"{a} vs {b}: gradient of {name} differs")


def assert_fused_attention_is_attention(tokens: int) -> None:
    """Our kernels' output and gradient of qkv, 2 heads of 12 dims (padded to 16), against the formula: float64 in
    Triton's interpreter on the CPU, float32 (IEEE dots) compiled on CUDA."""
    from vitbench.models import fused_attention as fa

    cuda = torch.cuda.is_available()
    kw = dict(device="cuda", dtype=torch.float32) if cuda else dict(dtype=torch.float64)
    tol = dict(rtol=1e-5, atol=1e-5) if cuda else dict(rtol=1e-10, atol=1e-12)
    heads, d = 2, 12
    torch.manual_seed(tokens)
    qkv = torch.randn(2, tokens, 3 * heads * d, **kw, requires_grad=True)
    weights = torch.randn(2, tokens, heads * d, **kw)
    q, k, v = qkv.view(2, tokens, 3, heads, d).permute(2, 0, 3, 1, 4)
    expected = ((q @ k.transpose(-1, -2)) * d**-0.5).softmax(-1) @ v
    expected = expected.transpose(1, 2).reshape(2, tokens, heads * d)
    (grad_expected,) = torch.autograd.grad((expected * weights).sum(), qkv)
    out = fa.fused_attention(qkv, heads)
    (grad,) = torch.autograd.grad((out * weights).sum(), qkv)
    torch.testing.assert_close(out, expected, **tol)
    torch.testing.assert_close(grad, grad_expected, **tol)



@pytest.mark.parametrize("preset", list(PRESETS))
@pytest.mark.parametrize("variant", list_variants())
def test_forward_backward(variant, preset):
    torch.manual_seed(0)
    model = create_model(variant, preset, **SMALL)
    out = model(batch(preset))
    assert out.shape == (3, PRESETS[preset]["num_classes"])
    assert torch.isfinite(out).all()
    out.logsumexp(-1).sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), f"no finite gradient reaches {name}"
        assert p.grad.abs().sum() > 0, f"zero gradient at {name}"



@pytest.mark.parametrize("part,impls", GROUPS, ids=[f"{p}:{'='.join(i)}" for p, i in GROUPS])
@pytest.mark.parametrize("variant", list_variants())
def test_implementations_of_one_function_agree(variant, part, impls):
    """One state_dict, every pair of implementations of the same function: same outputs and gradients (float64)."""
    assert_same_function(variant, part, impls)



@pytest.mark.parametrize("part,impl", EACH, ids=[f"{p}:{i}" for p, i in EACH])
def test_each_implementation_learns(part, impl):
    """Every implementation on its own: forward, backward, a gradient at every parameter, and an optimizer step
    that lowers the loss on a fixed batch (on the CPU; what cannot train there, flex, runs forward only)."""
    torch.manual_seed(0)
    model = create_model("sdpa", "mnist", depth=1, **{part: impl})
    x, y = batch("mnist", n=8), torch.arange(8) % 10
    if part == "attention" and ATTENTION[impl].unavailable(torch.device("cpu")):
        with torch.no_grad():
            assert torch.isfinite(model(x)).all()
        return
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    losses = []
    for _ in range(3):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        for name, p in model.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses



def test_implementations_are_grouped_by_the_function_they_compute(monkeypatch):
    """A different function (here a cosine-similarity attention) is its own group: never compared with softmax."""
    from vitbench.models.attention import VectorizedAttention

    class Cosine(VectorizedAttention):
        computes = "cosine similarity attention"

    monkeypatch.setitem(ATTENTION, "cosine", Cosine)
    groups = by_function(ATTENTION)
    assert ["cosine"] in groups and any("sdpa" in g and "naive" in g for g in groups)



def test_the_fused_kernels_handle_the_cifar10_shapes():
    """65 tokens (padded to a block of 128) and 12 dims per head (padded to 16), float64."""
    assert_same_function("sdpa", "attention", ["sdpa", "triton", "flex"], preset="cifar10")



@pytest.mark.parametrize("tokens,blocks,tile", [(17, (32, 0), None), (33, (32, 16), None), (50, (64, 0), None),
                                               (65, (64, 16), None), (65, (64, 16), (128, 4, 3)), (100, (128, 0), None)])
def test_the_fused_kernel_equals_attention_in_every_key_layout(tokens, blocks, tile, monkeypatch):
    """One block of keys or a block and a short tail block, one step of queries or several (``tile``: queries per
    step and warps, where the test sets them): the kernel's output and its gradient of qkv against
    softmax(QK^T / sqrt(d)) V, 12 dims per head (padded to 16). Float64 in Triton's interpreter on the CPU;
    float32 (IEEE dots) compiled on CUDA."""
    from vitbench.models import fused_attention as fa

    assert fa.key_blocks(tokens) == blocks
    if tile:
        monkeypatch.setitem(fa.TILES, sum(blocks), tile)
    steps = -(-tokens // fa._meta(tokens, 12, torch.float32)["BLOCK_M"])
    assert steps == {17: 1, 33: 2, 50: 1, 65: 1 if tile else 5, 100: 4}[tokens]
    assert_fused_attention_is_attention(tokens)



@pytest.mark.parametrize("tokens,tiles", [(129, None), (150, ((32, 16, 4, 1), (32, 16, 4, 1)))])
def test_longer_sequences_take_the_kernels_by_blocks(tokens, tiles, monkeypatch):
    """Over 128 tokens (197 at 224 px): the kernels that cut the sequence into blocks of tokens, one token past
    the per-head kernels' limit with the launch shapes vitbench uses, and 150 tokens with small blocks (5 programs
    per head each way, 10 steps each, the last ones partial), against softmax(QK^T / sqrt(d)) V as above."""
    from vitbench.models import fused_attention as fa

    assert tokens > fa.ONE_BLOCK
    if tiles:
        monkeypatch.setattr(fa, "FORWARD_BLOCKS", tiles[0])
        monkeypatch.setattr(fa, "BACKWARD_BLOCKS", tiles[1])
    assert_fused_attention_is_attention(tokens)



@pytest.mark.parametrize("tokens", [65, 150])
def test_the_kernels_with_64_bit_offsets_compute_the_same(tokens, monkeypatch):
    """Where qkv has 2^31 elements or more the kernels compute their offsets in 64 bits; here from any size on,
    both pairs of kernels (150 tokens with small blocks), against the formula as above."""
    import triton.language as tl

    from vitbench.models import fused_attention as fa

    assert fa._types(12, torch.float32, 2**31)["INDEX"] == tl.int64 and fa._types(12, torch.float32)["INDEX"] == tl.int32
    monkeypatch.setattr(fa, "WIDE_ELEMENTS", 0)
    monkeypatch.setattr(fa, "FORWARD_BLOCKS", (32, 32, 4, 1))
    monkeypatch.setattr(fa, "BACKWARD_BLOCKS", (32, 32, 4, 1))
    assert fa._types(12, torch.float32, 1)["INDEX"] == tl.int64
    assert_fused_attention_is_attention(tokens)



@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_properties(0).total_memory < 40 * 2**30,
                    reason="needs CUDA and ~20 GiB of it")
@pytest.mark.parametrize("tokens,heads,d", [(65, 2, 12), (197, 6, 64)])
def test_the_kernels_reach_past_two_to_the_31_elements(tokens, heads, d):
    """A qkv of more than 2^31 elements (ViT-S/16 inference at batch ~9,500): the last samples, whose offsets need
    64 bits, get the attention and the gradient torch's gives them (bf16), by both pairs of kernels."""
    from vitbench.models import fused_attention as fa

    batch = 2**31 // (tokens * 3 * heads * d) + 2
    qkv = torch.randn(batch, tokens, 3 * heads * d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    out = fa.fused_attention(qkv, heads)
    grad = torch.zeros_like(out)
    grad[-2:] = torch.randn_like(out[-2:])
    (grad_qkv,) = torch.autograd.grad(out, qkv, grad)
    tail = qkv.detach()[-2:].requires_grad_()
    q, k, v = tail.view(2, tokens, 3, heads, d).permute(2, 0, 3, 1, 4)
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(2, tokens, -1)
    (grad_expected,) = torch.autograd.grad(expected, tail, grad[-2:])
    for mine, ref in ((out[-2:], expected), (grad_qkv[-2:], grad_expected)):
        assert (mine.float() - ref.float()).norm() / ref.float().norm() < 2e-2



@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("preset", ["mnist", "cifar10", "vit-ti16"])
@pytest.mark.parametrize("part,impl,ref_impl", [("attention", "flex", "sdpa"), ("attention", "triton", "sdpa"),
                                                ("mlp", "triton", "torch")])
def test_compiled_kernels_on_cuda_equal_torch_s(part, impl, ref_impl, preset):
    """The compiled kernels (FlexAttention's, our attention's, our MLP's) against torch's on the GPU: float32
    outputs and gradients to 1e-5 relative (Triton's float32 dots are IEEE here, FlexAttention's may use TF32:
    2e-3), bf16 to 2e-2; and inside torch.compile."""
    x = batch(preset, n=64).cuda()
    torch.manual_seed(3)
    ref = create_model("sdpa", preset, **{part: ref_impl}).cuda()
    model = create_model("sdpa", preset, **{part: impl}).cuda()
    model.load_state_dict(ref.state_dict())
    tol = 2e-3 if impl == "flex" else 1e-5
    for precision, rtol in (("fp32", tol), ("bf16", 2e-2)):
        results = []
        for m in (ref, model):
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16"):
                results.append(_outputs_and_grads(m, x))
        (o1, g1), (o2, g2) = results
        assert (o1.float() - o2.float()).norm() / o1.float().norm() < rtol, precision
        for name in g1:
            assert (g1[name] - g2[name]).norm() / g1[name].norm().clamp_min(1e-12) < rtol * 5, (precision, name)
    compiled = torch.compile(model)
    torch.testing.assert_close(compiled(x), model(x), rtol=1e-4, atol=1e-4)
    compiled(x).sum().backward()



@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_the_fused_mlp_operator_equals_linear_then_gelu(dtype, monkeypatch):
    """fc1 and its GELU as our operator (Triton's interpreter on the CPU) against F.linear then F.gelu: the output
    and the gradients of input, weight and bias, on a shape no tile divides (111 rows, 300 columns: partial
    tiles both ways, several row blocks summed for the bias), with small tiles so every path runs."""
    from vitbench.models import fused_mlp

    monkeypatch.setattr(fused_mlp, "FORWARD_BLOCK", 256)
    monkeypatch.setattr(fused_mlp, "BACKWARD_TILE", (16, 64))
    g = torch.Generator().manual_seed(0)
    x, w, b = (torch.randn(*s, generator=g, dtype=torch.float64) for s in ((3, 37, 24), (300, 24), (300,)))
    grad = torch.randn(3, 37, 300, generator=g, dtype=torch.float64)
    results = []
    for fn in (fused_mlp.linear_gelu, lambda *t: torch.nn.functional.gelu(torch.nn.functional.linear(*t))):
        leaves = [t.to(dtype).requires_grad_() for t in (x, w, b)]
        out = fn(*leaves)
        out.backward(grad.to(dtype))
        results.append([out.detach().double(), *(t.grad.double() for t in leaves)])
    for name, mine, ref in zip(("output", "input grad", "weight grad", "bias grad"), *results, strict=True):
        if dtype == torch.float64:
            torch.testing.assert_close(mine, ref, rtol=1e-10, atol=1e-12, msg=name)
        else:  # bf16 roundings (ours sums the bias gradient before rounding, torch after): 1 % of the norm
            assert (mine - ref).norm() / ref.norm() < 1e-2, name



def test_the_fused_mlp_follows_autocast_and_counts_the_flops_of_nn_linear():
    """Under autocast the operator runs in the autocast dtype (as nn.Linear would) and the gradients reach the
    float32 parameters in float32; torch's FLOP counter (bench's TFLOP/s and MFU) counts what it counts for
    nn.Linear + nn.GELU; FP8 leaves fc1 as it is (the operator reads its weight) and takes fc2."""
    from torch.utils.flop_counter import FlopCounterMode

    from vitbench.compute import fp8_layers

    torch.manual_seed(0)
    ref = create_model("sdpa", "mnist", depth=1)
    model = create_model("sdpa", "mnist", depth=1, mlp="triton")
    model.load_state_dict(ref.state_dict())
    x = batch("mnist", n=4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.blocks[0].mlp(torch.randn(4, 17, 64))
    assert out.dtype == torch.bfloat16
    out.float().sum().backward()
    assert model.blocks[0].mlp.fc1.weight.grad.dtype == torch.float32
    flops = []
    for m in (ref, model):
        with FlopCounterMode(display=False) as counter:
            m(x).sum().backward()
        flops.append(counter.get_total_flops())
    assert flops[0] == flops[1] > 0
    assert "blocks.0.mlp.fc1" not in fp8_layers(model) and "blocks.0.mlp.fc2" in fp8_layers(model)
    assert "blocks.0.mlp.fc1" in fp8_layers(ref)



def test_mlps_that_cannot_run_somewhere_say_so(monkeypatch):
    from vitbench.models import fused_mlp

    cpu = torch.device("cpu")
    assert MLPS["triton"].unavailable(cpu) is None  # the tests run Triton's interpreter (conftest)
    monkeypatch.setattr(fused_mlp, "interpreted", lambda: False)
    assert "--mlp torch (the same function)" in MLPS["triton"].unavailable(cpu)
    assert MLPS["triton"].unavailable(torch.device("cuda")) is None and MLPS["torch"].unavailable(cpu) is None



def test_attentions_that_cannot_run_somewhere_say_so():
    cpu = torch.device("cpu")
    assert "no CPU backward" in ATTENTION["flex"].unavailable(cpu)
    assert ATTENTION["flex"].unavailable(cpu, training=False) is None
    assert ATTENTION["triton"].unavailable(cpu) is None  # the tests run Triton's interpreter (conftest)
    with pytest.raises(VitbenchError, match="no dropout on the attention weights"):
        create_model("sdpa", attention="flex", dropout=0.1)



@pytest.mark.parametrize("part,impls", [("attention", list(ATTENTION)), ("patchify", list(PATCHIFY)),
                                        ("mlp", list(MLPS))])
def test_state_dicts_load_across_implementations_float32(part, impls):
    """The acceptance check: B's state_dict loads into A (same keys and shapes), and with the same weights every
    implementation's float32 outputs agree to 1e-5 relative (so A loaded from B computes what B computes)."""
    x = batch("cifar10")
    impls = [i for i in impls if part != "attention" or not ATTENTION[i].unavailable(torch.device("cpu"), False)]
    models = {}
    for i in impls:
        torch.manual_seed(2)
        models[i] = create_model("sdpa", "cifar10", **{part: i}).eval()
    for a, b in itertools.permutations(impls, 2):
        models[a].load_state_dict(models[b].state_dict())  # strict: same keys and shapes
    weights = models[impls[0]].state_dict()
    with torch.no_grad():  # flex has no CPU backward
        ref = models[impls[0]](x)
        for a in impls[1:]:
            models[a].load_state_dict(weights)
            out = models[a](x)
            assert (out - ref).norm() / ref.norm() <= 1e-5, f"{a} loaded from {impls[0]}"



def test_torch_mha_shares_its_parameters_after_moves():
    m = create_model("torch-mha", depth=1).double()
    attn = m.blocks[0].attn
    assert attn.mha.in_proj_weight is attn.qkv.weight and attn.mha.out_proj is attn.proj
    assert attn.mha.in_proj_weight.dtype == torch.float64
    assert not any("mha" in k for k in m.state_dict())
    m.eval()
    assert not attn.mha.training



def test_overrides_fall_through_and_presets_apply():
    m = create_model("sdpa", "cifar10", dim=None, depth=2, heads=None)
    assert (m.cfg.dim, m.cfg.depth, m.cfg.heads, m.cfg.image_size) == (48, 2, 4, 32)
    assert create_model("naive-msa").cfg.pos_embed == "sinusoidal"
    assert create_model("naive-msa", pos_embed="none").pos_embed.pos is None



@pytest.mark.parametrize("kwargs,needle", [
    (dict(patch_size=5), "patch size 5 does not divide image size 28"),
    (dict(dim=66), "dim 66 is not divisible by heads 4"),
    (dict(dim=66, heads=6, pos_embed="sincos2d"), "needs dim divisible by 4, got dim 66"),
    (dict(attention="flash9"), f"valid: {', '.join(names.ATTENTION)}"),
    (dict(patchify="hex"), f"valid: {', '.join(names.PATCHIFY)}"),
    (dict(pool="max"), f"valid: {', '.join(names.POOL)}"),
    (dict(depth=0), "depth must be in [1, inf]"),
    (dict(patch_drop=1.0), "patch_drop must be in [0, 1)"),
    (dict(bogus=1), "unknown model option"),
])
def test_impossible_configurations_fail_at_construction(kwargs, needle):
    with pytest.raises(VitbenchError, match=re.escape(needle)):
        create_model("sdpa", **kwargs)



@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_patch_dropout_keeps_a_random_subset_of_patches_in_training_only(pool):
    model = create_model("sdpa", pool=pool, patch_size=4, patch_drop=0.25)  # 49 patches, 37 kept
    assert model.cfg.kept_patches == 37
    seen = {}
    model.blocks.register_forward_hook(lambda m, inp, out: seen.update(tokens=inp[0]))
    x = batch("mnist", n=3)
    model.train()
    torch.manual_seed(0)
    model(x)
    dropped = seen["tokens"]
    assert dropped.shape == (3, 37 + (pool == "cls"), 64)
    model.eval()
    model(x)
    full = seen["tokens"]
    assert full.shape == (3, 49 + (pool == "cls"), 64), "evaluation sees every patch"
    prefix = int(pool == "cls")
    if prefix:
        assert torch.equal(dropped[:, 0], full[:, 0]), "the CLS token always stays"
    # every kept token is one of the image's own tokens, position included, each at most once
    kept = [[int(torch.nonzero((full[b, prefix:] == t).all(1))[0]) for t in dropped[b, prefix:]] for b in range(3)]
    assert all(len(set(k)) == 37 for k in kept) and kept[0] != kept[1], "each image draws its own patches"
    model.train()
    torch.manual_seed(0)
    model(x)
    assert torch.equal(seen["tokens"], dropped), "the seed decides which patches are dropped"
    assert create_model("sdpa", patch_size=4).cfg.kept_patches == 49



@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_patch_dropout_draws_anew_at_each_cuda_graph_replay():
    """The engine captures the compiled step in a CUDA graph: the patches dropped must change per replay."""
    model = torch.compile(create_model("sdpa", patch_size=4, patch_drop=0.5).cuda().train())
    x = batch("mnist", n=8).cuda()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            model(x)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = model(x)
    outs = []
    for _ in range(3):
        graph.replay()
        outs.append(out.clone())
    assert not torch.equal(outs[0], outs[1]) and not torch.equal(outs[1], outs[2])



def test_unknown_variant_lists_valid_ones():
    with pytest.raises(VitbenchError) as e:
        create_model("vit-huge")
    for name in list_variants():
        assert name in str(e.value)



def test_wrong_input_shape_names_both_shapes():
    with pytest.raises(VitbenchError, match=r"\(3, 32, 32\).*\(1, 28, 28\)"):
        create_model("sdpa")(torch.randn(1, 3, 32, 32))



def test_config_is_frozen_and_serialisable():
    cfg = ViTConfig()
    assert ViTConfig(**cfg.to_dict()) == cfg
    with pytest.raises(AttributeError):
        cfg.dim = 3  # type: ignore[misc]



@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("variant", list_variants())
def test_every_variant_on_cuda(variant, precision):
    model = create_model(variant, depth=2).cuda()
    x = batch("mnist", n=8).cuda()
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16"):
        out = model(x)
    assert torch.isfinite(out).all()
    out.float().sum().backward()
    assert all(p.grad is not None for p in model.parameters())



def test_a_new_attention_passes_the_equivalence_checks(monkeypatch):
    """What ARCHITECTURE.md promises: a subclass of Attention and one ATTENTION entry, and the equivalence check
    takes it (tests/integration: the command line too)."""
    from tests.helpers import EinsumAttention

    monkeypatch.setitem(ATTENTION, "einsum", EinsumAttention)
    assert_same_function("sdpa", "attention", list(ATTENTION))



def test_a_loop_part_names_its_batched_twin_which_is_a_plain_implementation():
    """naive attention and the loop patchify are 'eager only' by an attribute, not by their names; evaluations run
    through the twin they name (the equivalence tests above prove it computes the same function)."""
    from vitbench.compute import naive_parts
    from vitbench.models.attention import ATTENTION
    from vitbench.models.patchify import PATCHIFY

    for table in (ATTENTION, PATCHIFY):
        for name, impl in table.items():
            if impl.batched_twin is not None:
                assert impl.batched_twin in table and table[impl.batched_twin].batched_twin is None, name
    assert {n for n, i in ATTENTION.items() if i.batched_twin} == {"naive"}
    assert {n for n, i in PATCHIFY.items() if i.batched_twin} == {"loop"}
    assert naive_parts(ViTConfig(attention="naive")) and naive_parts(ViTConfig(patchify="loop"))
    assert not naive_parts(ViTConfig(attention="vectorized", patchify="unfold"))

