"""Multi-slot LoRA: mixed batches equal per-row merged policies, gradients stay in their
slots, slot operations, injection by module name, stripping and routing."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn

from skillbank.lora import MultiLoraLinear, MultiLoraModel, inject, strip
from skillbank.lora.routing import make_plan

OBS, HID, OUT = 6, 32, 3
CAPACITY = 4
ATOL = 1e-4


# --------------------------------------------------------------------------- helpers
def mlp() -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(OBS, HID), nn.Tanh(), nn.Linear(HID, HID), nn.Tanh(), nn.Linear(HID, OUT)
    )


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.proj = nn.Linear(width, width)
        self.gate = nn.Linear(width, width)

    def forward(self, h: Tensor) -> Tensor:
        return h + torch.tanh(self.proj(h)) * torch.sigmoid(self.gate(h))


class Net(nn.Module):
    """Linear layers: enc.0, enc.2, blocks.0.proj, blocks.0.gate, blocks.1.proj,
    blocks.1.gate, head (and a Tanh at enc.1)."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(OBS, HID), nn.Tanh(), nn.Linear(HID, HID))
        self.blocks = nn.ModuleList([Block(HID), Block(HID)])
        self.head = nn.Linear(HID, OUT)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.tanh(self.enc(x))
        for block in self.blocks:
            h = block(h)
        return self.head(h)


NET_LINEARS = [
    "blocks.0.gate",
    "blocks.0.proj",
    "blocks.1.gate",
    "blocks.1.proj",
    "enc.0",
    "enc.2",
    "head",
]

# per slot: (rank, alpha); ranks and alphas differ between slots
SLOT_META = [(1, 3.0), (2, 8.0), (4, 2.0), (3, 12.0)]


def fill(model: MultiLoraModel, seed: int = 0, meta=SLOT_META) -> None:
    """Random A and B (B nonzero) in every slot, with per-slot rank and alpha."""
    g = torch.Generator().manual_seed(seed)
    for k, (r, alpha) in enumerate(meta[: model.num_slots]):
        for layer in model.layers.values():
            a = torch.randn(r, layer.in_features, generator=g) * 0.5
            b = torch.randn(layer.out_features, r, generator=g) * 0.5
            layer.set_slot(k, a, b, alpha)


def make(
    base_fn=mlp, num_slots: int = 4, seed: int = 0, targets=None, fill_seed: int = 100
) -> MultiLoraModel:
    torch.manual_seed(seed)
    model = MultiLoraModel(base_fn(), num_slots=num_slots, rank=CAPACITY, target_modules=targets)
    fill(model, fill_seed)
    return model


def reference(model: MultiLoraModel, x: Tensor, ids: Tensor) -> Tensor:
    """Row by row: the merged copy of the row's slot, or the plain base for -1."""
    lead = x.shape[:-1]
    ids = ids.reshape(ids.shape + (1,) * (len(lead) - ids.dim())).expand(lead)
    flat_x, flat_ids = x.reshape(-1, x.shape[-1]), ids.reshape(-1)
    plain = model.plain_base()
    merged = {k: model.merged_copy(k) for k in set(flat_ids.tolist()) if k >= 0}
    rows = []
    with torch.no_grad():
        for xi, k in zip(flat_x, flat_ids.tolist()):
            net = plain if k < 0 else merged[k]
            rows.append(net(xi.unsqueeze(0))[0])
    return torch.stack(rows).reshape(*lead, -1)


def run(model: MultiLoraModel, x: Tensor, ids: Tensor) -> Tensor:
    with torch.no_grad():
        return model(x, slot_ids=ids)


def xs(*shape: int, seed: int = 1) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------ mixed batches
ID_CASES = {
    "sorted_equal_all_slots": [0, 0, 1, 1, 2, 2, 3, 3],
    "sorted_equal_subset": [1, 1, 1, 3, 3, 3],
    "sorted_unequal": [0, 1, 1, 1, 2, 3, 3],
    "unsorted": [2, 0, 3, 1, 0, 2, 2, 1, 3],
    "with_base_rows": [-1, 0, -1, 2, 1, -1, 3, 0],
    "sorted_with_base_rows": [-1, -1, 0, 0, 1, 1],
    "single_row": [2],
}


@pytest.mark.parametrize("base_fn", [mlp, Net], ids=["mlp", "net"])
@pytest.mark.parametrize("case", list(ID_CASES))
def test_mixed_batch_equals_per_row_merged(base_fn, case: str) -> None:
    model = make(base_fn)
    ids = torch.tensor(ID_CASES[case])
    x = xs(len(ids), OBS)
    got = run(model, x, ids)
    want = reference(model, x, ids)
    torch.testing.assert_close(got, want, atol=ATOL, rtol=1e-4)
    # the adapters matter: a slot row differs from the base row
    base = model.plain_base()(x).detach()
    assert not torch.allclose(got[ids >= 0], base[ids >= 0], atol=1e-3)


def test_sorted_equal_counts_take_the_fast_path() -> None:
    plan = make_plan(torch.tensor([0, 0, 2, 2]))
    assert plan is not None and plan.gather is None and plan.block == 2
    assert plan.slot_list == [0, 2]
    plan = make_plan(torch.tensor([0, 2, 2]))
    assert plan is not None and plan.gather is not None


def test_base_rows_equal_plain_base_exactly() -> None:
    model = make(Net)
    x = xs(5, OBS)
    ids = torch.full((5,), -1)
    plain = model.plain_base()
    with torch.no_grad():
        want = plain(x)
    assert make_plan(ids) is None
    assert torch.equal(run(model, x, ids), want)
    with torch.no_grad():
        assert torch.equal(model(x), want)  # no ids at all
    mixed = run(model, x, torch.tensor([-1, 0, -1, 1, -1]))
    assert torch.equal(mixed[[0, 2, 4]], want[[0, 2, 4]])


@pytest.mark.parametrize(
    "ids",
    [
        [0, 0, 1, 1],  # sorted equal
        [3, 1, -1, 1],  # unsorted with base rows
        [2, 2, 2, 0],
    ],
)
def test_sequence_inputs_with_batch_ids(ids: list[int]) -> None:
    model = make(Net)
    idt = torch.tensor(ids)
    x = xs(len(ids), 5, OBS)
    got = run(model, x, idt)
    assert got.shape == (len(ids), 5, OUT)
    torch.testing.assert_close(got, reference(model, x, idt), atol=ATOL, rtol=1e-4)


def test_sequence_inputs_with_per_token_ids() -> None:
    model = make(Net)
    x = xs(3, 4, OBS)
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(-1, 4, (3, 4), generator=g)
    ids[0] = 2  # one row with a single slot, others mixed
    got = run(model, x, ids)
    torch.testing.assert_close(got, reference(model, x, ids), atol=ATOL, rtol=1e-4)


def test_per_slot_rank_and_alpha_are_used() -> None:
    model = make(mlp)
    layer = model.layers["2"]
    for k, (r, alpha) in enumerate(SLOT_META):
        assert int(layer.slot_rank[k]) == r
        assert float(layer.slot_alpha[k]) == alpha
        assert float(layer.slot_scale[k]) == pytest.approx(alpha / r)
        a, b, got_alpha = layer.get_slot(k)
        assert a.shape == (r, HID) and b.shape == (HID, r) and got_alpha == alpha
        torch.testing.assert_close(layer.delta_weight(k), (alpha / r) * b @ a)
        # padding beyond the rank is exactly zero
        assert torch.count_nonzero(layer.lora_A[k, r:]) == 0
        assert torch.count_nonzero(layer.lora_B[k, :, r:]) == 0
    # explicit formula on one layer: y = W x + b + alpha / r * B A x
    x = xs(4, HID)
    for k, (r, alpha) in enumerate(SLOT_META):
        a, b, _ = layer.get_slot(k)
        want = layer.base_layer(x) + (alpha / r) * x @ a.t() @ b.t()
        with torch.no_grad():
            got = layer(x, slot_ids=torch.full((4,), k))
        torch.testing.assert_close(got, want, atol=ATOL, rtol=1e-4)


def test_slot_id_above_num_slots_is_an_error() -> None:
    """Slot 5 does not exist in a 3-slot model: it must not silently use another slot."""
    model = make(mlp, num_slots=3)
    x = xs(3, OBS)
    with pytest.raises((ValueError, IndexError)):
        run(model, x, torch.tensor([0, 1, 5]))


# ----------------------------------------------------------------------- gradients
def test_gradients_reach_only_the_used_slots() -> None:
    model = make(Net, num_slots=4)
    x = xs(9, OBS)
    ids = torch.tensor([2, -1, 0, 2, 0, -1, 2, 0, 0])  # slots 0 (rank 1), 2 (rank 4)
    w = xs(9, OUT, seed=3)
    (model(x, slot_ids=ids) * w).sum().backward()
    for name, layer in model.layers.items():
        ga, gb = layer.lora_A.grad, layer.lora_B.grad
        assert ga is not None and gb is not None, name
        for k in (1, 3):  # unused
            assert torch.count_nonzero(ga[k]) == 0, name
            assert torch.count_nonzero(gb[k]) == 0, name
        for k in (0, 2):  # used: nonzero on the rank, exactly zero on the padding
            r = SLOT_META[k][0]
            assert torch.count_nonzero(ga[k, :r]) > 0, name
            assert torch.count_nonzero(gb[k, :, :r]) > 0, name
            assert torch.count_nonzero(ga[k, r:]) == 0, name
            assert torch.count_nonzero(gb[k, :, r:]) == 0, name
        assert layer.base_layer.weight.grad is None
        assert layer.base_layer.bias.grad is None
    for p in model.base.parameters():
        if p is not None and not any(p is q for q in model.slot_parameters()):
            assert not p.requires_grad and p.grad is None


def test_mixed_batch_gradients_equal_per_slot_gradients() -> None:
    """The loss is a sum over rows, so the gradient of an unsorted mixed batch equals the sum
    of the gradients of each slot's rows run alone."""
    x = xs(10, OBS)
    ids = torch.tensor([3, 1, -1, 3, 1, 1, 0, 3, -1, 0])
    w = xs(10, OUT, seed=4)

    mixed = make(mlp)
    (mixed(x, slot_ids=ids) * w).sum().backward()

    split = make(mlp)
    for k in ids.unique().tolist():
        if k < 0:
            continue  # base rows carry no adapter gradient
        rows = ids == k
        (split(x[rows], slot_ids=ids[rows]) * w[rows]).sum().backward()
    for name in mixed.layers:
        m, s = mixed.layers[name], split.layers[name]
        torch.testing.assert_close(m.lora_A.grad, s.lora_A.grad, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(m.lora_B.grad, s.lora_B.grad, atol=1e-5, rtol=1e-4)


def test_layer_gradient_matches_the_formula() -> None:
    torch.manual_seed(0)
    layer = MultiLoraLinear(nn.Linear(5, 7), num_slots=2, rank=3)
    g = torch.Generator().manual_seed(1)
    layer.set_slot(1, torch.randn(2, 5, generator=g), torch.randn(7, 2, generator=g), 6.0)
    x = torch.randn(4, 5, generator=g)
    gy = torch.randn(4, 7, generator=g)
    (layer(x, slot_ids=torch.ones(4, dtype=torch.long)) * gy).sum().backward()
    a, b, _ = layer.get_slot(1)
    s = 6.0 / 2
    torch.testing.assert_close(layer.lora_A.grad[1, :2], s * b.t() @ gy.t() @ x)
    torch.testing.assert_close(layer.lora_B.grad[1, :, :2], s * gy.t() @ (x @ a.t()))
    assert torch.count_nonzero(layer.lora_A.grad[0]) == 0
    assert torch.count_nonzero(layer.lora_A.grad[1, 2:]) == 0


def test_input_gradient_matches_merged_copy() -> None:
    model = make(mlp)
    x1 = xs(4, OBS).requires_grad_(True)
    (model(x1, slot_ids=torch.full((4,), 2)) ** 2).sum().backward()
    merged = model.merged_copy(2)
    x2 = xs(4, OBS).requires_grad_(True)
    (merged(x2) ** 2).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, atol=ATOL, rtol=1e-4)


# ------------------------------------------------------------------------ slot ops
def test_reset_slot() -> None:
    model = make(mlp)
    x = xs(5, OBS)
    ids = torch.full((5,), 1)
    model.reset_slot(1, rank=2, alpha=4.0, generator=torch.Generator().manual_seed(9))
    # B = 0: the slot acts as the base; A is random on its first rank rows only
    torch.testing.assert_close(run(model, x, ids), model.plain_base()(x).detach())
    for layer in model.layers.values():
        assert int(layer.slot_rank[1]) == 2 and float(layer.slot_scale[1]) == 2.0
        assert torch.count_nonzero(layer.lora_B[1]) == 0
        assert torch.count_nonzero(layer.lora_A[1, 2:]) == 0
        bound = 1.0 / layer.in_features**0.5
        a = layer.lora_A[1, :2]
        assert torch.count_nonzero(a) == a.numel() and float(a.detach().abs().max()) <= bound
    # other slots untouched
    other = make(mlp)
    for k in (0, 2, 3):
        idk = torch.full((5,), k)
        assert torch.equal(run(model, x, idk), run(other, x, idk))
    # same generator seed -> same A
    again = make(mlp)
    again.reset_slot(1, rank=2, alpha=4.0, generator=torch.Generator().manual_seed(9))
    for name in model.layers:
        assert torch.equal(model.layers[name].lora_A, again.layers[name].lora_A)
    with pytest.raises(ValueError):
        model.reset_slot(1, rank=CAPACITY + 1, alpha=1.0)
    with pytest.raises(ValueError):
        model.reset_slot(1, rank=0, alpha=1.0)
    with pytest.raises(IndexError):
        model.reset_slot(4, rank=1, alpha=1.0)


def test_zero_slot() -> None:
    model = make(mlp)
    x = xs(5, OBS)
    model.zero_slot(3)
    torch.testing.assert_close(
        run(model, x, torch.full((5,), 3)), model.plain_base()(x).detach(), atol=0, rtol=0
    )
    for layer in model.layers.values():
        a, b, alpha = layer.get_slot(3)
        assert a.shape[0] == 0 and b.shape[1] == 0 and alpha == 0.0
        assert torch.count_nonzero(layer.lora_A[3]) == 0
    with pytest.raises(IndexError):
        model.zero_slot(-1)


def test_copy_slot() -> None:
    model = make(Net)
    x = xs(5, OBS)
    want = run(model, x, torch.full((5,), 2))
    model.copy_slot(2, 0)
    assert torch.equal(run(model, x, torch.full((5,), 0)), want)
    for layer in model.layers.values():
        a0, b0, al0 = layer.get_slot(0)
        a2, b2, al2 = layer.get_slot(2)
        assert torch.equal(a0, a2) and torch.equal(b0, b2) and al0 == al2
        assert int(layer.slot_rank[0]) == SLOT_META[2][0]
    # a copy, not an alias: changing the source leaves the copy
    model.zero_slot(2)
    assert torch.equal(run(model, x, torch.full((5,), 0)), want)


def test_set_slot_rejects_bad_shapes_and_rank() -> None:
    layer = MultiLoraLinear(nn.Linear(5, 7), num_slots=2, rank=3)
    good_a, good_b = torch.ones(2, 5), torch.ones(7, 2)
    layer.set_slot(0, good_a, good_b, 4.0)
    before = (layer.lora_A.detach().clone(), layer.lora_B.detach().clone())
    bad = [
        (torch.ones(2, 4), good_b),  # wrong in_features
        (good_a, torch.ones(6, 2)),  # wrong out_features
        (good_a, torch.ones(7, 3)),  # rank of B != rank of A
        (torch.ones(5), good_b),  # A not 2-D
        (good_a, torch.ones(7, 2, 1)),  # B not 2-D
        (torch.ones(4, 5), torch.ones(7, 4)),  # rank 4 > capacity 3
    ]
    for a, b in bad:
        with pytest.raises(ValueError):
            layer.set_slot(0, a, b, 1.0)
    assert torch.equal(layer.lora_A, before[0]) and torch.equal(layer.lora_B, before[1])
    assert int(layer.slot_rank[0]) == 2 and float(layer.slot_alpha[0]) == 4.0
    with pytest.raises(IndexError):
        layer.set_slot(2, good_a, good_b, 1.0)


def test_load_slot_state_round_trip_and_unknown_module() -> None:
    src = make(Net)
    dst = make(Net, fill_seed=5)
    dst.load_slot_state(1, src.slot_state(3))
    x = xs(4, OBS)
    assert torch.equal(run(dst, x, torch.full((4,), 1)), run(src, x, torch.full((4,), 3)))
    with pytest.raises(KeyError):
        dst.load_slot_state(0, {"nope": src.slot_state(0)["head"]})


# ------------------------------------------------------------------------ injection
@pytest.mark.parametrize(
    ("targets", "want"),
    [
        (None, NET_LINEARS),
        (["enc.0", "head"], ["enc.0", "head"]),  # exact names
        (["blocks.1.gate"], ["blocks.1.gate"]),
        (["proj", "head"], ["blocks.0.proj", "blocks.1.proj", "head"]),  # suffixes
        (["0.gate", "2"], ["blocks.0.gate", "enc.2"]),
        (r"blocks\.\d\.gate", ["blocks.0.gate", "blocks.1.gate"]),  # regex, full match
        (r"enc\..*|head", ["enc.0", "enc.2", "head"]),
    ],
)
def test_inject_targets(targets, want: list[str]) -> None:
    torch.manual_seed(0)
    net = Net()
    original = copy.deepcopy(net)
    layers = inject(net, num_slots=2, rank=2, target_modules=targets)
    assert sorted(layers) == want
    wrapped = {n for n, m in net.named_modules() if isinstance(m, MultiLoraLinear)}
    assert wrapped == set(want)
    assert all(net.get_submodule(n) is layers[n] for n in want)
    plain = {n for n, m in net.named_modules() if type(m) is nn.Linear}
    # the other Linear layers are untouched; the wrapped ones live on as base_layer
    assert plain == (set(NET_LINEARS) - set(want)) | {f"{n}.base_layer" for n in want}
    # nothing routed: the injected model is the original network
    x = xs(3, OBS)
    with torch.no_grad():
        assert torch.equal(net(x), original(x))


@pytest.mark.parametrize("targets", [["roj"], ["enc.1"], "proj", r"blocks\.\d", ["missing"]])
def test_inject_error_when_nothing_matches(targets) -> None:
    # "roj" is not a dotted suffix, enc.1 is a Tanh, a regex must match the whole path
    with pytest.raises(ValueError, match="target_modules"):
        inject(Net(), num_slots=2, rank=2, target_modules=targets)


def test_model_target_modules_and_slot_parameters() -> None:
    model = make(Net, targets=["proj"])
    assert sorted(model.lora_layers()) == ["blocks.0.proj", "blocks.1.proj"]
    assert len(model.slot_parameters()) == 4
    assert all(p.requires_grad for p in model.slot_parameters())
    assert isinstance(model.base.head, nn.Linear)


@pytest.mark.parametrize("base_fn", [mlp, Net], ids=["mlp", "net"])
def test_strip_and_plain_base(base_fn) -> None:
    torch.manual_seed(3)
    base = base_fn()
    original = copy.deepcopy(base)
    model = MultiLoraModel(base, num_slots=3, rank=CAPACITY)
    fill(model)
    for plain in (model.plain_base(), strip(model.base)):
        kinds = {type(m) for m in plain.modules()}
        assert MultiLoraLinear not in kinds
        linears = [n for n, m in plain.named_modules() if isinstance(m, nn.Linear)]
        assert linears == [n for n, m in original.named_modules() if isinstance(m, nn.Linear)]
        want = original.state_dict()
        got = plain.state_dict()
        assert list(got) == list(want)
        for key in want:
            assert torch.equal(got[key], want[key]), key
        x = xs(4, OBS)
        with torch.no_grad():
            assert torch.equal(plain(x), original(x))
        # a copy: changing it leaves the model's base alone
        with torch.no_grad():
            next(plain.parameters()).add_(1.0)
        first = next(iter(model.layers.values())).base_layer.weight
        assert torch.equal(first, next(original.parameters()))


def test_merged_copy_is_plain_and_leaves_model_unchanged() -> None:
    model = make(mlp)
    merged = model.merged_copy(1)
    assert all(type(m) is not MultiLoraLinear for m in merged.modules())
    for name, layer in model.layers.items():
        lin = merged.get_submodule(name)
        torch.testing.assert_close(
            lin.weight, layer.base_layer.weight + layer.delta_weight(1), atol=1e-6, rtol=0
        )
        assert torch.equal(lin.bias, layer.base_layer.bias)
    # base weights inside the model are not modified by merging
    plain = model.plain_base()
    x = xs(3, OBS)
    torch.testing.assert_close(run(model, x, torch.full((3,), -1)), plain(x).detach())


# -------------------------------------------------------------------------- routing
def test_router_context_nests_and_restores() -> None:
    model = make(mlp)
    x = xs(4, OBS)
    outer, inner = torch.tensor([0, 1, 2, 3]), torch.tensor([3, 3, -1, 1])
    want_outer, want_inner = reference(model, x, outer), reference(model, x, inner)
    base = model.plain_base()(x).detach()
    assert model.router.active is None
    with torch.no_grad():
        with model.slots(outer):
            torch.testing.assert_close(model.base(x), want_outer, atol=ATOL, rtol=1e-4)
            with model.slots(inner):
                assert model.router.active is inner
                torch.testing.assert_close(model.base(x), want_inner, atol=ATOL, rtol=1e-4)
            assert model.router.active is outer
            torch.testing.assert_close(model.base(x), want_outer, atol=ATOL, rtol=1e-4)
            # model(..., slot_ids=) inside a context also restores the outer ids
            torch.testing.assert_close(model(x, slot_ids=inner), want_inner, atol=ATOL, rtol=1e-4)
            torch.testing.assert_close(model.base(x), want_outer, atol=ATOL, rtol=1e-4)
            with model.slots(None):
                assert torch.equal(model.base(x), base)
            torch.testing.assert_close(model.base(x), want_outer, atol=ATOL, rtol=1e-4)
        assert model.router.active is None
        assert torch.equal(model.base(x), base)


def test_router_restores_after_an_exception() -> None:
    model = make(mlp)
    outer = torch.tensor([1, 2])
    with model.slots(outer):
        with pytest.raises(RuntimeError), model.slots(torch.tensor([0, 0])):
            raise RuntimeError("boom")
        assert model.router.active is outer
    assert model.router.active is None


def test_layer_with_explicit_slot_ids_overrides_router() -> None:
    model = make(mlp)
    layer = model.layers["0"]
    x = xs(4, OBS)
    ids = torch.tensor([2, -1, 0, 2])
    want = torch.stack(
        [
            layer.base_layer(x[i]) + (layer.delta_weight(k) @ x[i] if k >= 0 else 0)
            for i, k in enumerate(ids.tolist())
        ]
    ).detach()
    with torch.no_grad():
        torch.testing.assert_close(layer(x, slot_ids=ids), want, atol=ATOL, rtol=1e-4)
        with model.slots(torch.tensor([1, 1, 1, 1])):
            torch.testing.assert_close(layer(x, slot_ids=ids), want, atol=ATOL, rtol=1e-4)
        # without explicit ids and no router context: the base layer
        assert torch.equal(layer(x), layer.base_layer(x))


@pytest.mark.parametrize(
    ("x_shape", "ids_shape"),
    [((5, OBS), (4,)), ((5, OBS), (6,)), ((3, 4, OBS), (3, 5)), ((3, 4, OBS), (4,))],
)
def test_slot_ids_shape_mismatch_raises(x_shape, ids_shape) -> None:
    model = make(mlp)
    x = torch.zeros(x_shape)
    ids = torch.zeros(ids_shape, dtype=torch.long)
    with pytest.raises(ValueError, match="slot ids"):
        model(x, slot_ids=ids)
    with pytest.raises(ValueError, match="slot ids"):
        model.layers["0"](x, slot_ids=ids)
    assert model.router.active is None


def test_constructor_rejects_empty_layer() -> None:
    with pytest.raises(ValueError):
        MultiLoraLinear(nn.Linear(2, 2), num_slots=0, rank=1)
    with pytest.raises(ValueError):
        MultiLoraLinear(nn.Linear(2, 2), num_slots=1, rank=0)


def test_sorted_rows_training_path_equals_inference_path() -> None:
    """Rows sorted by slot with equal counts take an in-place path without gradients and
    an out-of-place one with them (autograd through an in-place view is slow): same output,
    and the gradient equals the gather path's (unsorted rows)."""
    x = xs(12, OBS)
    ids = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    model = make(mlp)
    with torch.no_grad():
        want = model(x, slot_ids=ids)
    w = xs(12, OUT, seed=5)
    got = model(x, slot_ids=ids)
    torch.testing.assert_close(got, want)
    (got * w).sum().backward()
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(0))
    other = make(mlp)
    (other(x[perm], slot_ids=ids[perm]) * w[perm]).sum().backward()
    for name in model.layers:
        a, b = model.layers[name], other.layers[name]
        torch.testing.assert_close(a.lora_A.grad, b.lora_A.grad, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(a.lora_B.grad, b.lora_B.grad, atol=1e-5, rtol=1e-4)
