"""MoLE on a LLaMA-family LM: degenerate cases equal simpler models (megablocks-style), gate semantics, switches."""

import copy

import pytest
import torch
import transformers

from mome.model.mole import (Adapter, FFNWithMoLE, MoLE, attach_mole, mole_aux_loss, mole_modules,
                             replicate_adapter, resize_experts, routing_context)

from .conftest import randomize_adapters

D, B, T = 64, 3, 7


def llama(seed: int = 0) -> transformers.LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = transformers.LlamaConfig(vocab_size=97, hidden_size=D, intermediate_size=96, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return transformers.LlamaForCausalLM(cfg).eval()


def batch():
    g = torch.Generator().manual_seed(3)
    return torch.randint(0, 97, (B, T), generator=g), torch.randn(B, 384, generator=g)


@pytest.mark.parametrize("router, K", [("single", 1), ("instance", 4), ("token", 3), ("instance_token", 2)])
def test_fresh_mole_equals_base_model_bit_exactly(router, K):
    ids, inst = batch()
    base = llama()
    want = base(ids).logits
    model = attach_mole(copy.deepcopy(base), K, rank=8, router=router)
    assert all(isinstance(layer.mlp, FFNWithMoLE) for layer in model.model.layers)
    with routing_context(model, inst):
        got = model(ids).logits
    assert torch.equal(got, want)


def test_one_expert_mole_equals_plain_adapter():
    torch.manual_seed(0)
    mole = MoLE(D, num_experts=1, rank=8, router="single")
    adapter = Adapter(D, rank=8)
    with torch.no_grad():
        mole.w_up.normal_(std=0.1)
        mole.b_up.normal_(std=0.1)
        mole.b_down.normal_(std=0.1)
        mole.scale.fill_(1.7)
        adapter.down.weight.copy_(mole.w_down[0].t())
        adapter.down.bias.copy_(mole.b_down[0])
        adapter.up.weight.copy_(mole.w_up[0].t())
        adapter.up.bias.copy_(mole.b_up[0])
        adapter.scale.fill_(1.7)
    x = torch.randn(B, T, D)
    torch.testing.assert_close(mole(x), adapter(x), rtol=1e-5, atol=1e-6)
    assert mole(x).abs().max() > 0.01  # not trivially zero


@pytest.mark.parametrize("router", ["instance", "token", "instance_token"])
def test_stage2_replication_equals_stage1(router):
    ids, inst = batch()
    model = attach_mole(llama(), 1, rank=8, router="single")
    randomize_adapters(model)
    stage1 = model(ids).logits
    replicate_adapter(model, 4, router=router)
    assert all(m.num_experts == 4 and m.router is not None for m in mole_modules(model))
    with routing_context(model, inst):
        stage2 = model(ids).logits
    torch.testing.assert_close(stage2, stage1, rtol=0, atol=1e-6)
    assert not torch.equal(stage1, llama()(ids).logits)  # the adapters do something


@pytest.mark.parametrize("router", ["instance", "token", "instance_token"])
def test_more_experts_by_copies_leave_the_outputs_and_split_the_routing(router):
    ids, inst = batch()
    model = attach_mole(llama(), 3, rank=8, router=router)
    randomize_adapters(model)
    with torch.no_grad():  # distinct experts, so a wrong copy would change the outputs
        for m in mole_modules(model):
            m.w_down.add_(0.1 * torch.randn(m.w_down.shape))
    with routing_context(model, inst):
        before = model(ids).logits
    old = [{k: v.clone() for k, v in m.state_dict().items()} for m in mole_modules(model)]
    resize_experts(model, 7, generator=torch.Generator().manual_seed(0))
    with routing_context(model, inst):
        after = model(ids).logits
    if router == "instance":  # 3 samples whose logit gaps are far above the 1e-3 noise: nothing reordered
        torch.testing.assert_close(after, before, rtol=0, atol=1e-6)
    for o, m in zip(old, mole_modules(model)):
        assert m.num_experts == 7 and m.router[2].out_features == 7
        for j in range(7):
            assert torch.equal(m.w_down[j], o["w_down"][j % 3]) and torch.equal(m.scale[j], o["scale"][j % 3])
        assert torch.equal(m.router[2].weight[:3], o["router.2.weight"])  # the source's rows untouched
        assert not torch.equal(m.router[2].weight[3:6], o["router.2.weight"])  # the copies' rows perturbed
        assert torch.equal(m.router[0].weight, o["router.0.weight"])
    chosen = torch.cat([m.last_expert.flatten() for m in mole_modules(model)])
    assert (chosen >= 3).any()  # the noise breaks the ties: some samples or tokens go to a copy


def test_fewer_experts_keep_the_first_ones():
    model = attach_mole(llama(), 4, rank=8, router="instance")
    randomize_adapters(model)
    old = [copy.deepcopy(m) for m in mole_modules(model)]
    resize_experts(model, 2)
    for o, m in zip(old, mole_modules(model)):
        assert m.num_experts == 2
        assert torch.equal(m.w_up, o.w_up[:2]) and torch.equal(m.router[2].bias, o.router[2].bias[:2])
    single = attach_mole(llama(), 1, rank=8, router="single")
    with pytest.raises(ValueError, match="routed experts"):
        resize_experts(single, 2)


@pytest.mark.parametrize("gate, router_grad", [("straight_through", "dense"), ("straight_through", "top1"),
                                               ("switch", "dense")])
def test_gate_is_one_hot_forward_with_gradient_to_router(gate, router_grad):
    torch.manual_seed(0)
    mole = MoLE(D, num_experts=4, rank=8, router="instance_token", gate=gate, router_grad=router_grad)
    with torch.no_grad():
        mole.w_up.normal_(std=0.1)
    x = torch.randn(B, T, D)
    mole.instruction = torch.randn(B, 384)
    y = mole(x)
    probs = mole.last_probs
    torch.testing.assert_close(probs.sum(-1), torch.ones(B, T))
    assert torch.equal(mole.last_expert, probs.argmax(-1))
    e = mole.last_expert
    if gate == "switch":
        g = mole.last_gate.detach()[..., None]
    else:  # exactly one-hot in the forward
        assert mole.last_gate is None or torch.equal(mole.last_gate.detach(), torch.ones(B, T))
        g = 1.0
    # The output is exactly the chosen expert's adapter (scaled by the gate value).
    h = torch.relu(torch.einsum("btd,btdr->btr", x, mole.w_down[e]) + mole.b_down[e])
    ref = g * mole.scale[e][..., None] * (torch.einsum("btr,btrd->btd", h, mole.w_up[e]) + mole.b_up[e])
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-6)
    y.square().sum().backward()
    router_grads = [p.grad for p in mole.router.parameters()]
    assert all(gr is not None and torch.isfinite(gr).all() for gr in router_grads)
    assert any(gr.abs().sum() > 0 for gr in router_grads)


def _release_mole(mole: MoLE, x: torch.Tensor) -> torch.Tensor:
    """The release's AdapterRouterMLP in plain autograd: every adapter evaluated, weighted by the straight-through
    gate ``onehot − p.detach() + p`` of an instance router (OFFICIAL.md § MoLE)."""
    p = torch.softmax(mole.router(mole.instruction), dim=-1)  # (B, K)
    gate = torch.nn.functional.one_hot(p.argmax(-1), mole.num_experts) - p.detach() + p
    out = 0
    for k in range(mole.num_experts):
        y_k = mole.scale[k] * (torch.relu(x @ mole.w_down[k] + mole.b_down[k]) @ mole.w_up[k] + mole.b_up[k])
        out = out + y_k * gate[:, k, None, None]
    return out


def _randomised_instance_mole(router_grad: str) -> tuple[MoLE, torch.Tensor]:
    torch.manual_seed(1)
    mole = MoLE(D, num_experts=4, rank=8, router="instance", router_grad=router_grad)
    with torch.no_grad():
        for p in (mole.w_up, mole.b_up, mole.b_down):
            p.normal_(std=0.2)
        mole.scale.uniform_(0.7, 1.3)
    mole.instruction = torch.randn(B, 384)
    return mole, torch.randn(B, T, D, requires_grad=True)


def test_dense_router_gradient_equals_the_releases_straight_through_gate():
    mole, x = _randomised_instance_mole("dense")
    target = torch.randn(B, T, D)
    ours = mole(x)
    ((ours - target) ** 2).sum().backward()
    got = {n: p.grad.clone() for n, p in mole.named_parameters()} | {"x": x.grad.clone()}
    mole.zero_grad()
    x.grad = None
    theirs = _release_mole(mole, x)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    ((theirs - target) ** 2).sum().backward()
    want = {n: p.grad for n, p in mole.named_parameters()} | {"x": x.grad}
    for name in want:
        scale = want[name].abs().max()  # float32 sums in another order: a budget relative to the tensor
        torch.testing.assert_close(got[name], want[name], rtol=1e-4, atol=1e-6 * scale, msg=name)
    assert got["router.2.bias"].abs().max() > 1e-3


@pytest.mark.parametrize("router_grad", ["dense", "top1"])
def test_router_logit_gradient_matches_the_hand_formula(router_grad):
    """∂L/∂z_j = Σ_k s_k p_k (δ_kj − p_j), s_k = ⟨∂L/∂out, y_k(x)⟩ summed over the sample's tokens: over every
    expert k (the release, "dense"), or over the chosen expert c only ("top1")."""
    mole, x = _randomised_instance_mole(router_grad)
    g = torch.randn(B, T, D)
    (mole(x) * g).sum().backward()
    with torch.no_grad():
        z = mole.router(mole.instruction)  # (B, K) logits
        p = torch.softmax(z, -1)
        s = torch.stack([(g * (mole.scale[k] * (torch.relu(x @ mole.w_down[k] + mole.b_down[k]) @ mole.w_up[k]
                                                + mole.b_up[k]))).sum((1, 2)) for k in range(4)], -1)  # (B, K)
        if router_grad == "top1":
            s = s * torch.nn.functional.one_hot(p.argmax(-1), 4)
        dz = (s * p).sum(-1, keepdim=True) * -p + s * p  # Σ_k s_k p_k (δ_kj − p_j)
    # the last router layer's bias gradient is ∂L/∂z summed over the batch
    torch.testing.assert_close(mole.router[2].bias.grad, dz.sum(0), rtol=1e-4, atol=1e-6)


def test_instance_router_picks_one_expert_per_sample_token_router_per_token():
    torch.manual_seed(0)
    x = torch.randn(B, T, D)
    inst = MoLE(D, 4, 8, "instance")
    inst.instruction = torch.randn(B, 384)
    inst(x)
    assert (inst.last_expert == inst.last_expert[:, :1]).all()
    tok = MoLE(D, 4, 8, "token")
    tok(x * 5)
    assert tok.last_expert.unique().numel() > 1


def test_gumbel_noise_only_while_training_and_load_balance_loss():
    torch.manual_seed(0)
    model = attach_mole(llama(), 4, rank=8, router="token", gumbel=True, gumbel_tau=0.5, load_balance=0.01)
    ids, _ = batch()
    model.eval()
    model(ids)
    first = [m.last_expert.clone() for m in mole_modules(model)]
    model(ids)
    assert all(torch.equal(a, m.last_expert) for a, m in zip(first, mole_modules(model)))  # no noise in eval
    model.train()
    draws = []
    for _ in range(4):
        model(ids)
        draws.append(torch.cat([m.last_expert.flatten() for m in mole_modules(model)]))
    assert any(not torch.equal(draws[0], d) for d in draws[1:])  # noise in training
    aux = mole_aux_loss(model)
    assert aux is not None and aux.item() > 0 and aux.requires_grad


def test_attach_errors():
    model = attach_mole(llama(), 2, rank=4, router="token")
    with pytest.raises(ValueError, match="already has MoLE"):
        attach_mole(model, 2, rank=4)
    with pytest.raises(TypeError, match="LLaMA-family layout"):
        attach_mole(torch.nn.Linear(3, 3), 2)
    with pytest.raises(ValueError, match="single adapter"):
        replicate_adapter(model, 4)
    with pytest.raises(ValueError, match="router must be one of"):
        MoLE(D, 2, 4, router="expert_choice")
    inst = attach_mole(llama(), 2, rank=4, router="instance")
    with pytest.raises(RuntimeError, match="routing_context"):
        inst(batch()[0])
