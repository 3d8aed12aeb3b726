"""Multi-LoRA forward benchmark (``skillbank bench lora`` = ``bench/multi_lora_forward.py``).

MLP 64 -> 256 -> 256 -> 8 (tanh), LoRA r=8 on every Linear, batch 4096, N skills mixed
uniformly in one batch (each skill B/N rows, rows shuffled). Printed, all measured in this
run: ms per batch and the ratio to the base alone for
  - base alone (plain nn.Sequential),
  - skillbank PolicyLibrary.forward on the shuffled mixed batch,
  - peft mixed-batch inference (``adapter_names=``), if peft is installed,
  - a loop over N separate full (merged) models, each on its own rows,
  - training step (forward + backward): skillbank (adapter grads) vs the base (all grads),
  - act() latency at batch 1 with 32 skills loaded vs the base alone.
Timing: median of interleaved repeats (peers alternate, so drift hits all alike).
"""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

DIMS = (64, 256, 256, 8)
BATCH = 4096
RANK = 8


class BenchMLP(nn.Module):
    """The benchmark network; returns the output and a zero 'value' so that act() works."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(DIMS[:-1], DIMS[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(DIMS) - 2:
                layers.append(nn.Tanh())
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _time(fns: dict[str, Callable[[], object]], repeats: int, inner: int) -> dict[str, float]:
    """Median ms per call of each function, measured in interleaved rounds."""
    for f in fns.values():
        for _ in range(3):
            f()
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, f in fns.items():
            t = time.perf_counter()
            for _ in range(inner):
                f()
            samples[name].append((time.perf_counter() - t) / inner * 1e3)
    return {k: statistics.median(v) for k, v in samples.items()}


def _peft_model(base: nn.Module, adapters: list[dict], n: int) -> nn.Module | None:
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        return None
    targets = [name for name, m in base.named_modules() if isinstance(m, nn.Linear)]
    cfg = LoraConfig(r=RANK, lora_alpha=2 * RANK, target_modules=targets, init_lora_weights=False)
    model = get_peft_model(copy.deepcopy(base), cfg, adapter_name="s0")
    for k in range(1, n):
        model.add_adapter(f"s{k}", cfg)
    # copy skillbank's adapter weights so both compute the same thing
    for name, module in model.named_modules():
        if hasattr(module, "lora_A") and isinstance(module.lora_A, nn.ModuleDict):
            path = name.split("base_model.model.", 1)[-1]
            for k in range(n):
                a, b, _ = adapters[k][path]
                module.lora_A[f"s{k}"].weight.data.copy_(a)
                module.lora_B[f"s{k}"].weight.data.copy_(b)
    return model.eval()


def run(threads: int = 2, quick: bool = False, sizes: tuple[int, ...] = (1, 8, 32, 128)) -> list:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    repeats, inner = (5, 5) if quick else (15, 10)
    base = BenchMLP().eval()
    x = torch.randn(BATCH, DIMS[0])
    print(
        f"# multi-LoRA forward: MLP {'-'.join(map(str, DIMS))} tanh, r={RANK} on every "
        f"Linear, batch {BATCH}, torch {torch.__version__}, torch.set_num_threads({threads})"
    )
    print(
        f"{'N':>4} {'base ms':>8} {'skillbank':>16} {'peft mixed':>16} {'N full models':>16}"
        f" {'train base ms':>14} {'train skillbank':>16}"
    )
    rows = []
    for n in sizes:
        rows.append(_measure(n, base, x, repeats, inner))
    for r in rows:
        if "act" in r:
            a = r["act"]
            print(
                f"act() at batch 1 with {a['skills']} skills loaded: {a['skillbank'] * 1e3:.0f} us;"
                f" act() of the base alone {a['base_act'] * 1e3:.0f} us"
                f" ({a['skillbank'] / a['base_act']:.2f}x); bare base forward"
                f" {a['base'] * 1e3:.0f} us ({a['skillbank'] / a['base']:.2f}x)"
            )
    mem = _memory_line(base)
    print(mem)
    return rows


def _measure(n: int, base: nn.Module, x: torch.Tensor, repeats: int, inner: int) -> dict:
    """Forward and training-step timings for N skills mixed in one batch."""
    from skillbank.library.core import PolicyLibrary
    from skillbank.lora.layer import MultiLoraModel

    tmp = Path(tempfile.mkdtemp())
    lib = PolicyLibrary.create(
        tmp / "lib", base, {"kind": "bench_mlp", "kwargs": {}}, capacity=RANK
    )
    model = MultiLoraModel(copy.deepcopy(base), n, RANK)
    gen = torch.Generator().manual_seed(1)
    for k in range(n):
        model.reset_slot(k, RANK, 2 * RANK, generator=gen)
        for layer in model.layers.values():
            with torch.no_grad():
                layer.lora_B[k].normal_(0, 0.02, generator=gen)
    adapters = [model.slot_state(k) for k in range(n)]
    for k in range(n):
        lib.add_skill(f"s{k}", (model, k), {})
    names = [f"s{k}" for k in range(n)]
    row_skill = [names[i % n] for i in torch.randperm(BATCH, generator=gen).tolist()]
    full = [model.merged_copy(k).eval() for k in range(n)]
    groups = [torch.tensor([i for i, s in enumerate(row_skill) if s == nm]) for nm in names]
    peft_model = _peft_model(base, adapters, n)
    fns: dict[str, Callable[[], object]] = {}
    with torch.no_grad():
        fns["base"] = lambda: base(x)
        fns["skillbank"] = lambda: lib.forward(x, row_skill)

        def loop_full() -> torch.Tensor:
            out = torch.empty(BATCH, DIMS[-1])
            for k, idx in enumerate(groups):
                out[idx] = full[k](x[idx])
            return out

        fns["full"] = loop_full
        if peft_model is not None:
            fns["peft"] = lambda: peft_model(x, adapter_names=row_skill)
        ref = loop_full()
        got = lib.forward(x, row_skill)
        assert torch.allclose(got, ref, atol=1e-4), "skillbank output differs from merged"
        t = _time(fns, repeats, inner)

    train_base = copy.deepcopy(base).train()
    lib.model.train()
    ids = lib.slot_ids(row_skill, BATCH)
    order = torch.argsort(ids, stable=True)
    xs, ids_sorted = x[order], ids[order]

    def step_base() -> None:
        train_base.zero_grad(set_to_none=True)
        train_base(x).square().mean().backward()

    def step_lora() -> None:
        lib.model.zero_grad(set_to_none=True)
        with lib.model.slots(ids_sorted):
            lib.model.base(xs).square().mean().backward()

    tt = _time({"base": step_base, "skillbank": step_lora}, repeats, inner)
    lib.model.eval()
    peft_s = f"{t['peft']:.2f} ({t['peft'] / t['base']:.2f}x)" if "peft" in t else "n/a"
    print(
        f"{n:>4} {t['base']:8.2f} {t['skillbank']:7.2f} ({t['skillbank'] / t['base']:.2f}x)"
        f" {peft_s:>16} {t['full']:7.2f} ({t['full'] / t['base']:.2f}x)"
        f" {tt['base']:14.2f} {tt['skillbank']:7.2f} ({tt['skillbank'] / tt['base']:.2f}x)"
    )
    row: dict = {"n": n, "forward_ms": t, "train_ms": tt}
    if n == 32:
        row["act"] = _act_latency(lib, base, names, repeats)
    return row


def _act_latency(lib: object, base: nn.Module, names: list[str], repeats: int) -> dict:
    from skillbank.library.core import PolicyLibrary

    assert isinstance(lib, PolicyLibrary)
    lib.base_config["kwargs"] = {"action_kind": "box", "obs_dim": DIMS[0]}
    lib._norm_cache = None
    obs = torch.randn(DIMS[0]).numpy()
    x1 = torch.randn(1, DIMS[0])
    with torch.no_grad():
        t = _time(
            {
                "base": lambda: base(x1),
                "base_act": lambda: lib.act(obs, None),
                "skillbank": lambda: lib.act(obs, names[-1]),
            },
            repeats,
            200,
        )
    return {"skills": len(names), **t}


def _memory_line(base: nn.Module) -> str:
    base_bytes = sum(p.numel() * p.element_size() for p in base.parameters())
    skill = sum((RANK * a + b * RANK) * 4 for a, b in zip(DIMS[:-1], DIMS[1:]))
    return (
        f"memory: base {base_bytes:,} B, one r={RANK} skill {skill:,} B "
        f"({100 * skill / base_bytes:.1f}% of the base)"
    )


def main(threads: int = 2, quick: bool = False) -> None:
    run(threads=threads, quick=quick)
