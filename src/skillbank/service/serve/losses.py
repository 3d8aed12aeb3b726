"""The built-in Tinker losses, as a registry of pure functions on one datum's tensors.

A datum gives ``logp`` ``[N]``: the log-probability, under the tenant's current adapter, of
``target_tokens[i]`` after input tokens ``0..i``. Losses are *sums* over tokens (Tinker's
convention: the caller's ``weights``/``advantages`` carry any normalisation):

- ``cross_entropy``: ``-sum(weights * logp)``;
- ``importance_sampling``: ``-sum(exp(logp - logprobs) * advantages)`` (``logprobs``: the
  sampler's log-probabilities);
- ``ppo``: ``-sum(min(r * A, clip(r, clip_low_threshold, clip_high_threshold) * A))``,
  ``r = exp(logp - logprobs)`` (thresholds from ``loss_fn_config``, default 0.8 and 1.2).

Every loss returns ``logprobs`` (= ``logp``) and ``elementwise_loss`` per datum.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from skillbank.service.serve.errors import ServeError, Unsupported, field_error
from skillbank.service.serve.wire import Datum

LossFn = Callable[[Tensor, dict[str, Tensor], dict[str, float]], Tensor]


@dataclass(frozen=True)
class Loss:
    """A loss: its required float inputs (besides ``target_tokens``) and its elementwise
    function ``(logp, inputs, config) -> loss per token``."""

    inputs: tuple[str, ...]
    elementwise: LossFn
    config: tuple[str, ...] = ()


def _cross_entropy(logp: Tensor, x: dict[str, Tensor], cfg: dict[str, float]) -> Tensor:
    return -(x["weights"] * logp)


def _importance_sampling(logp: Tensor, x: dict[str, Tensor], cfg: dict[str, float]) -> Tensor:
    return -(torch.exp(logp - x["logprobs"]) * x["advantages"])


def _ppo(logp: Tensor, x: dict[str, Tensor], cfg: dict[str, float]) -> Tensor:
    ratio = torch.exp(logp - x["logprobs"])
    lo, hi = cfg.get("clip_low_threshold", 0.8), cfg.get("clip_high_threshold", 1.2)
    adv = x["advantages"]
    return -torch.minimum(ratio * adv, ratio.clamp(lo, hi) * adv)


LOSSES: dict[str, Loss] = {
    "cross_entropy": Loss(("weights",), _cross_entropy),
    "importance_sampling": Loss(("logprobs", "advantages"), _importance_sampling),
    "ppo": Loss(("logprobs", "advantages"), _ppo, ("clip_low_threshold", "clip_high_threshold")),
}


def get_loss(name: str) -> Loss:
    if name not in LOSSES:
        if name in ("cispo", "dro", "gspo", "stable_reinforce", "custom"):
            raise Unsupported(f"field 'loss_fn': loss {name!r} (supported: {sorted(LOSSES)})")
        raise field_error("loss_fn", f"unknown loss {name!r} (supported: {sorted(LOSSES)})")
    return LOSSES[name]


def check_datums(
    data: list[Datum], loss_name: str, config: dict[str, float], vocab: int, max_len: int
) -> Loss:
    """The loss, after checking every datum against it; a ServeError naming the field.

    ``target_tokens`` and every input the loss needs must be 1-D with one value per input
    token, finite, and token ids inside the vocabulary. ``weights`` default to ones."""
    loss = get_loss(loss_name)
    unknown = sorted(set(config) - set(loss.config))
    if unknown:
        raise field_error(f"loss_fn_config.{unknown[0]}", f"not an option of {loss_name!r}")
    if not data:
        raise field_error("data", "no datums")
    for i, d in enumerate(data):
        n = int(d.tokens.numel())
        where = f"data[{i}]"
        if n == 0:
            raise field_error(f"{where}.model_input", "no tokens")
        if n > max_len:
            raise field_error(f"{where}.model_input", f"{n} tokens, above the context {max_len}")
        _check_ids(f"{where}.model_input", d.tokens, vocab)
        if "target_tokens" not in d.inputs:
            raise field_error(f"{where}.loss_fn_inputs.target_tokens", "missing")
        d.inputs["target_tokens"] = d.inputs["target_tokens"].reshape(-1).to(torch.int64)
        if "weights" not in d.inputs and "weights" in loss.inputs:
            d.inputs["weights"] = torch.ones(n)
        for name in ("target_tokens", *loss.inputs):
            f = f"{where}.loss_fn_inputs.{name}"
            if name not in d.inputs:
                raise field_error(f, f"missing (loss {loss_name!r} needs {list(loss.inputs)})")
            t = d.inputs[name]
            if t.dim() != 1 or t.numel() != n:
                raise field_error(f, f"shape {list(t.shape)}, expected [{n}] (one per token)")
            if name != "target_tokens":
                d.inputs[name] = t = t.to(torch.float32)
                if not bool(torch.isfinite(t).all()):
                    raise field_error(f, "holds NaN or infinite values")
        _check_ids(f"{where}.loss_fn_inputs.target_tokens", d.inputs["target_tokens"], vocab)
    return loss


def _check_ids(where: str, ids: Tensor, vocab: int) -> None:
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab):
        raise field_error(where, f"token ids must lie in [0, {vocab})")


def datum_loss(loss: Loss, logp: Tensor, d: Datum, config: dict[str, float]) -> Tensor:
    """Elementwise loss of one checked datum; a ServeError if it is not finite."""
    out = loss.elementwise(logp, d.inputs, config)
    if not bool(torch.isfinite(out.detach()).all()):
        raise ServeError("the loss is NaN or infinite for these inputs (nothing was applied)")
    return out
