"""The engine without HTTP: the fused mixed-batch step of two tenants gives each exactly
what it gets alone (loss, logprobs, gradients), losses and datum checks name the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("tinker")

from serve_helpers import make_model_dir  # noqa: E402

from skillbank.service.serve.engine import Engine, Work, load_hf_base  # noqa: E402
from skillbank.service.serve.errors import ServeError  # noqa: E402
from skillbank.service.serve.losses import check_datums  # noqa: E402
from skillbank.service.serve.wire import Datum  # noqa: E402

ALL = {"train_attn": True, "train_mlp": True, "train_unembed": True}


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("serve_engine") / "base")


def _engine(base_dir: Path) -> Engine:
    model, tok = load_hf_base(base_dir)
    eng = Engine(model, tok, train_slots=2, sampler_slots=1, capacity=8)
    eng.init_slot(0, 4, seed=1, groups=ALL)
    eng.init_slot(1, 8, seed=2, groups={**ALL, "train_unembed": False})
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():  # B != 0, so every adapter changes the outputs
        for p in eng.params:
            p.add_(0.05 * torch.randn(p.shape, generator=gen) * (p != 0))
    return eng


def _data(seed: int, n: int, loss: str) -> list[Datum]:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        length = 5 + 3 * i + seed % 3
        toks = torch.randint(4, 40, (length,), generator=gen)
        tgt = torch.randint(4, 40, (length,), generator=gen)
        inputs = {"target_tokens": tgt}
        if loss == "cross_entropy":
            inputs["weights"] = torch.rand(length, generator=gen)
        else:
            inputs["logprobs"] = -torch.rand(length, generator=gen) * 3
            inputs["advantages"] = torch.randn(length, generator=gen)
        out.append(Datum(toks, inputs))
    return out


def _works(eng: Engine, slot: int, seed: int, loss: str) -> Work:
    data = _data(seed, 3, loss)
    return Work(slot, data, check_datums(data, loss, {}, eng.vocab, eng.max_len), {}, False)


def _grads(eng: Engine, slot: int) -> list[torch.Tensor]:
    return [p.grad[slot].clone() for p in eng.params]  # type: ignore[index]


def test_fused_step_equals_each_tenant_alone(base_dir: Path) -> None:
    fused = _engine(base_dir)
    res = fused.fused(
        [_works(fused, 0, 10, "cross_entropy"), _works(fused, 1, 11, "importance_sampling")]
    )
    alone = [_engine(base_dir), _engine(base_dir)]
    solo_a = alone[0].fused([_works(alone[0], 0, 10, "cross_entropy")])[0]
    solo_b = alone[1].fused([_works(alone[1], 1, 11, "importance_sampling")])[0]
    for got, want in ((res[0], solo_a), (res[1], solo_b)):
        assert got.error is None and want.error is None
        assert abs(got.metrics["loss:sum"] - want.metrics["loss:sum"]) < 1e-5
        for g, w in zip(got.outputs, want.outputs):
            assert torch.allclose(
                torch.tensor(g["logprobs"]), torch.tensor(w["logprobs"]), atol=1e-5
            )
    for slot, solo in ((0, alone[0]), (1, alone[1])):
        g_fused, g_alone = _grads(fused, slot), _grads(solo, slot)
        assert sum(float(g.abs().sum()) for g in g_alone) > 1e-3  # there is a gradient
        for a, b in zip(g_fused, g_alone):
            assert torch.allclose(a, b, atol=1e-5)
    # a tenant's step moves only its own slot
    before = [p[1].clone() for p in fused.params]
    fused.optim_step(0, {"learning_rate": 1e-2})
    assert all(torch.equal(b, p[1]) for b, p in zip(before, fused.params))
    assert fused.step_of(0) == 1 and fused.step_of(1) == 0
    assert all(float(p.grad[0].abs().sum()) == 0 for p in fused.params)  # type: ignore[index]
    assert any(float(p.grad[1].abs().sum()) > 0 for p in fused.params)  # type: ignore[index]


def test_state_round_trip(base_dir: Path) -> None:
    eng = _engine(base_dir)
    eng.fused([_works(eng, 0, 5, "cross_entropy")])
    eng.optim_step(0, {"learning_rate": 1e-2})
    state, optim = eng.lora_state(0), eng.moments(0)
    eng.load_slot(1, state, optim)
    assert eng.step_of(1) == 1
    a = eng.fused([Work(0, *_one(eng))])[0].outputs[0]["logprobs"]
    b = eng.fused([Work(1, *_one(eng))])[0].outputs[0]["logprobs"]
    assert torch.allclose(torch.tensor(a), torch.tensor(b), atol=1e-6)


def _one(eng: Engine) -> tuple:
    data = _data(7, 1, "cross_entropy")
    return data, check_datums(data, "cross_entropy", {}, eng.vocab, eng.max_len), {}, True


@pytest.mark.parametrize(
    "change, field",
    [
        (
            lambda d: d.inputs.__setitem__("weights", torch.ones(2)),
            "data[0].loss_fn_inputs.weights",
        ),
        (lambda d: d.inputs.pop("target_tokens"), "data[0].loss_fn_inputs.target_tokens"),
        (
            lambda d: d.inputs.__setitem__(
                "weights", torch.full_like(d.inputs["weights"], float("nan"))
            ),
            "data[0].loss_fn_inputs.weights",
        ),
        (
            lambda d: d.inputs.__setitem__("target_tokens", d.inputs["target_tokens"] + 1000),
            "target_tokens",
        ),
    ],
)
def test_bad_datums_name_the_field(change, field: str) -> None:
    data = _data(1, 1, "cross_entropy")
    change(data[0])
    with pytest.raises(ServeError, match=field.replace("[", r"\[").replace("]", r"\]")):
        check_datums(data, "cross_entropy", {}, 44, 64)


def test_unknown_and_unsupported_losses() -> None:
    with pytest.raises(ServeError, match="loss_fn.*unknown loss 'nope'"):
        check_datums(_data(1, 1, "cross_entropy"), "nope", {}, 44, 64)
    with pytest.raises(ServeError, match="not supported.*'cispo'"):
        check_datums(_data(1, 1, "cross_entropy"), "cispo", {}, 44, 64)
    with pytest.raises(ServeError, match="loss_fn_inputs.logprobs.*missing"):
        check_datums(_data(1, 1, "cross_entropy"), "importance_sampling", {}, 44, 64)


def test_idle_tenant_is_saved_unloaded_and_reloaded(base_dir: Path, tmp_path: Path) -> None:
    from skillbank.service.serve.store import Store, Tenant
    from skillbank.service.serve.tenants import NoFreeSlot, Tenants

    model, tok = load_hf_base(base_dir)
    eng = Engine(model, tok, train_slots=1, sampler_slots=1, capacity=8)
    store = Store(tmp_path / "out", str(base_dir))
    table = Tenants(eng, store, idle_timeout_s=60.0)
    t = Tenant("sess-x:train:0", "owner", 4, 0, dict(ALL))
    table.add(t)
    eng.fused([_works(eng, 0, 3, "cross_entropy")])
    eng.optim_step(0, {"learning_rate": 1e-2})
    probe = eng.fused([Work(0, *_one(eng))])[0].outputs[0]["logprobs"]
    with pytest.raises(NoFreeSlot, match="no free slot: all 1 tenant slots"):
        table.add(Tenant("sess-x:train:1", "owner", 4, 1, dict(ALL)))
    table.last_used[t.model_id] -= 120  # idle past the timeout
    assert table.unload_idle() == [t.model_id]
    assert store.run(t.model_id).checkpoint_stable(1).is_file()
    other = Tenant("sess-x:train:1", "owner", 4, 1, dict(ALL))
    table.add(other)  # the freed slot
    table.unload(other.model_id)
    slot = table.slot(t)  # reloaded from its checkpoint, Adam step included
    assert eng.step_of(slot) == 1
    again = eng.fused([Work(slot, *_one(eng))])[0].outputs[0]["logprobs"]
    assert torch.allclose(torch.tensor(probe), torch.tensor(again), atol=1e-6)
    assert sorted(x.model_id for x in store.tenants()) == [t.model_id, other.model_id]


def test_mixed_sampling_batch_equals_each_request_alone(base_dir: Path) -> None:
    from skillbank.service.serve.sampling import SampleJob, generate

    eng = _engine(base_dir)

    def jobs() -> list[SampleJob]:
        return [
            SampleJob(0, [5, 6, 7], 3, 6, temperature=0.9, seed=4),
            SampleJob(1, [8, 9], 2, 5, temperature=1.0, top_k=10, seed=5, stop_tokens={2}),
            SampleJob(-1, [10, 11, 12, 13], 1, 4, temperature=0.0),
        ]

    together = generate(eng.mm, jobs(), eng.max_len)
    alone = [generate(eng.mm, [j], eng.max_len)[0] for j in jobs()]
    for (seqs_t, _), (seqs_a, _) in zip(together, alone):
        assert [s.tokens for s in seqs_t] == [s.tokens for s in seqs_a]
        for st, sa in zip(seqs_t, seqs_a):
            assert torch.allclose(torch.tensor(st.logprobs), torch.tensor(sa.logprobs), atol=1e-5)
    assert [len(s.tokens) for s in together[0][0]] == [6, 6, 6]
    assert together[0][0][0].tokens != together[1][0][0].tokens  # slots differ
