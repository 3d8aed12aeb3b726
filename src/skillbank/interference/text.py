"""The text case: a tiny causal LM (``skillbank.lm``) trained on text domains in order, on
ONE shared LoRA adapter (slot 0) or on the full weights, with the project's GRPO code.

Smooth loss of domain A: mean per-token negative log-likelihood (nats) of A's reference
answers (+ eos) on a fixed set of training-split prompts (the same quantity as
``skillbank.lm.answer_nll``, written functionally so it can be differentiated twice).
Score: mean reward (%) of greedy completions on A's test split.
Neurons: MLP intermediate channels; channel j of layer l owns row j of gate_proj and
up_proj and column j of down_proj (in shared-adapter mode, of the merged weights)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

from skillbank.interference.config import TextOptions
from skillbank.interference.measures import NeuronPart
from skillbank.interference.setting import Setting, SharedTask

MLP_PROJ = ("gate_proj", "up_proj", "down_proj")


class FullWeightsAdam:
    """The optimiser interface ``grpo_step`` expects (``zero_grad``, ``skip_nonfinite``,
    ``params``, ``step``) over full weights: ``params`` is empty so the per-slot clip in
    ``grpo_step`` does nothing, and ``step`` clips the global gradient norm itself."""

    def __init__(self, weights: list[nn.Parameter], lr: float, max_norm: float) -> None:
        self.weights, self.max_norm = weights, max_norm
        self.params: list[nn.Parameter] = []
        self.adam = torch.optim.Adam(weights, lr=lr)
        self.skipped = False

    def zero_grad(self) -> None:
        self.adam.zero_grad()

    def skip_nonfinite(self) -> None:
        grads = [w.grad for w in self.weights if w.grad is not None]
        self.skipped = not all(bool(torch.isfinite(g).all()) for g in grads)

    def step(self) -> None:
        if self.skipped:
            return
        nn.utils.clip_grad_norm_(self.weights, self.max_norm)
        self.adam.step()


class TextModel:
    """The SlotLM, the shared parameters and the slot every domain trains."""

    def __init__(self, opts: TextOptions) -> None:
        from skillbank.lm import SlotLM, init_slot, load_base

        self.opts = opts
        base, tok = load_base(opts.base) if opts.base else load_base()
        self.lm = SlotLM(base, tok, num_slots=1, capacity=opts.rank)
        self.slot = 0 if opts.mode == "shared-adapter" else -1
        if opts.mode == "shared-adapter":
            init_slot(self.lm, 0, opts.rank, seed=opts.seed)
            self.params = {k: p for k, p in self.lm.mm.named_parameters() if p.requires_grad}
        else:
            self.params = {k: p for k, p in self.lm.mm.named_parameters() if "lora_" not in k}
            for p in self.params.values():
                p.requires_grad_(True)
        self.mlp = {  # "layers.<l>.mlp.<proj>" -> (parameter prefix, its MultiLoraLinear)
            name.split("model.", 1)[-1]: (f"base.{name}", layer)
            for name, layer in self.lm.mm.lora_layers().items()
            if name.rsplit(".", 1)[-1] in MLP_PROJ
        }

    def effective(self, theta: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The MLP projection weights [out, in] at ``theta`` (merged in adapter mode)."""
        out = {}
        for short, (prefix, layer) in self.mlp.items():
            if self.slot == -1:
                out[short] = theta[f"{prefix}.base_layer.weight"]
            else:
                a = theta[f"{prefix}.lora_A"][0]  # [r, in]
                b = theta[f"{prefix}.lora_B"][0]  # [out, r]
                out[short] = layer.base_layer.weight + layer.slot_scale[0] * b @ a
        return out

    def neuron_layers(self) -> dict[str, list[NeuronPart]]:
        layers: dict[str, list[NeuronPart]] = {}
        for short in self.mlp:
            block = short.rsplit(".", 1)[0]  # layers.<l>.mlp
            parts = layers.setdefault(block, [])
            parts.append(NeuronPart(short, 1 if short.endswith("down_proj") else 0))
        return layers

    def nll(self, params: Mapping[str, Tensor], tokens: Tensor, mask: Tensor) -> Tensor:
        """Mean NLL of the masked tokens (answers + eos) with the shared parameters replaced."""
        ids = torch.full((tokens.shape[0],), self.slot, dtype=torch.long)
        with sdpa_kernel(SDPBackend.MATH):  # twice differentiable attention
            out = functional_call(
                self.lm.mm, dict(params), (), {"input_ids": tokens, "slot_ids": ids}, strict=False
            )
        logp = torch.log_softmax(out.logits[:, :-1].float(), -1)  # [B, T-1, V]
        tok_lp = logp.gather(-1, tokens[:, 1:, None]).squeeze(-1)  # [B, T-1]
        m = mask[:, 1:].float()
        return -(tok_lp * m).sum() / m.sum().clamp(min=1)


class TextDomain:
    """Closures of one text domain."""

    def __init__(self, model: TextModel, name: str, index: int) -> None:
        from skillbank.lm import get_domain

        self.m, self.index = model, index
        self.domain = get_domain(name)

    def train(self, steps: int, seed: int, sequence: bool) -> dict[str, Any]:
        from skillbank.lm import GRPOConfig, train_grpo

        m, o = self.m, self.m.opts
        out: dict[str, Any] = {}
        lr = o.learning_rate or (5e-4 if m.slot == 0 else 1e-4)
        cfg = GRPOConfig(
            steps=steps,
            prompts_per_step=o.prompts_per_step,
            group_size=o.group_size,
            learning_rate=lr,
            seed=seed,
        )
        if m.slot == 0:
            hist = train_grpo(m.lm, 0, [self.domain], cfg)
        else:
            hist = full_weights_grpo(m, self.domain, cfg)
        out["grpo_steps"] = steps
        out["reward_first"] = hist[0]["reward"] if hist else None
        out["reward_last10"] = sum(h["reward"] for h in hist[-10:]) / max(len(hist[-10:]), 1)
        return out

    def score(self) -> float:
        from skillbank.lm import score

        with torch.no_grad():
            return 100.0 * score(self.m.lm, self.m.slot, self.domain, n=self.m.opts.eval_n)

    def make_loss(self) -> tuple[Any, dict[str, Tensor]]:
        from skillbank.lm import sft_batch

        m = self.m
        exs = self.domain.examples(m.opts.loss_samples, "train", seed=777 + self.index)
        tokens, mask = sft_batch(m.lm, exs)  # [B, T] each

        def loss(params: Mapping[str, Tensor]) -> Tensor:
            return m.nll(params, tokens, mask)

        return loss, {"tokens": tokens, "mask": mask.to(torch.uint8)}


def full_weights_grpo(m: TextModel, domain: Any, cfg: Any) -> list[dict[str, float]]:
    """GRPO on the full weights: ``skillbank.lm.train_grpo`` with the base (slot -1) and
    ``FullWeightsAdam`` as its optimiser."""
    from skillbank.lm import train_grpo

    opt = FullWeightsAdam(list(m.params.values()), cfg.learning_rate, cfg.max_grad_norm)
    return train_grpo(m.lm, -1, [domain], cfg, optimizer=opt)


@torch.no_grad()
def merge_slot_into_base(m: TextModel) -> None:
    """Full mode: add slot 0's LoRA delta to every adapted base weight, then zero the slot."""
    for layer in m.lm.mm.lora_layers().values():
        layer.base_layer.weight += layer.delta_weight(0).to(layer.base_layer.weight)
    m.lm.mm.zero_slot(0)


def warm_up(m: TextModel, domains: list[TextDomain]) -> dict[str, Any]:
    """Joint SFT on every domain (``skillbank.lm.train_sft`` on slot 0), before the sequence."""
    from skillbank.lm import SFTConfig, init_slot, train_sft

    o = m.opts
    if m.slot == -1:
        init_slot(m.lm, 0, o.rank, seed=o.seed)
    hist = train_sft(m.lm, 0, [d.domain for d in domains], SFTConfig(o.warmup_sft, seed=o.seed))
    if m.slot == -1:
        merge_slot_into_base(m)
    return {"steps": o.warmup_sft, "final_loss": hist[-1]["loss"]}


def text_setting(opts: TextOptions) -> Setting:
    """A ``Setting`` for ``opts.domains`` on the tiny LM (after the joint SFT warm-up)."""
    from skillbank.lm import get_domain

    for name in opts.domains:  # an unknown name fails here, before the model loads
        get_domain(name)
    model = TextModel(opts)
    tds = [TextDomain(model, name, i) for i, name in enumerate(opts.domains)]
    warm = warm_up(model, tds) if opts.warmup_sft > 0 else None
    domains = [SharedTask(td.domain.name, td.train, td.score, td.make_loss) for td in tds]
    return Setting(
        kind="text",
        mode=opts.mode,
        domains=domains,
        params=model.params,
        neuron_layers=model.neuron_layers(),
        effective=model.effective,
        loss_text=(
            "mean per-token NLL (nats) of A's reference answers (+eos) on "
            f"{opts.loss_samples} fixed training-split prompts"
        ),
        score_text=f"mean reward (%) of greedy completions on {opts.eval_n} test prompts",
        steps_unit="GRPO steps",
        info={
            "base": str(opts.base) if opts.base else "packaged tiny-lm",
            "rank": opts.rank if opts.mode == "shared-adapter" else None,
            "learning_rate": opts.learning_rate,
            "warmup_sft": warm,
            "grpo_learning_rate": opts.learning_rate or (5e-4 if model.slot == 0 else 1e-4),
            "prompts_per_step": opts.prompts_per_step,
            "group_size": opts.group_size,
            "seed": opts.seed,
        },
    )
