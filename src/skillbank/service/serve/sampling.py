"""Mixed-batch generation: rows of many sampling requests (each through its own slot, or
the base) advance together, one forward per new token.

Each row keeps its own sampling parameters (temperature, top-k, top-p, max_tokens, stop)
and its own generator (seeded from the request's ``seed``, so a seeded request gives the
same tokens alone or in a batch). Returned log-probabilities are those of the sampled
tokens under the distribution they were drawn from (temperature applied). A stop token is
kept at the end of its sequence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from skillbank.lora import MultiLoraModel
from skillbank.service.serve.wire import Sequence


@dataclass
class SampleJob:
    """One sample request, already checked."""

    slot: int
    prompt: list[int]
    num_samples: int
    max_tokens: int
    temperature: float = 1.0
    top_k: int = -1
    top_p: float = 1.0
    seed: int = 0
    stop_tokens: set[int] = field(default_factory=set)
    stop_strings: list[str] = field(default_factory=list)
    prompt_logprobs: bool = False


@dataclass
class _Row:
    job: int
    gen: torch.Generator
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    done: str | None = None


def _pick(logits: Tensor, job: SampleJob, gen: torch.Generator) -> tuple[int, float]:
    if job.temperature <= 0:
        lp = torch.log_softmax(logits, -1)
        tok = int(torch.argmax(logits))
        return tok, float(lp[tok])
    scaled = logits / job.temperature
    if 0 < job.top_k < scaled.numel():
        kth = torch.topk(scaled, job.top_k).values[-1]
        scaled = scaled.masked_fill(scaled < kth, -math.inf)
    if job.top_p < 1.0:
        probs, order = torch.sort(torch.softmax(scaled, -1), descending=True)
        cut = torch.cumsum(probs, -1) - probs > job.top_p
        scaled[order[cut]] = -math.inf
    lp = torch.log_softmax(scaled, -1)
    tok = int(torch.multinomial(lp.exp(), 1, generator=gen))
    return tok, float(lp[tok])


def _forward(mm: MultiLoraModel, seqs: list[list[int]], slots: list[int]) -> Tensor:
    """Logits ``[B, T, V]`` of right-padded rows (causal: padding is never attended)."""
    longest = max(len(s) for s in seqs)
    x = torch.zeros(len(seqs), longest, dtype=torch.int64)
    for b, s in enumerate(seqs):
        x[b, : len(s)] = torch.tensor(s, dtype=torch.int64)
    with torch.no_grad(), mm.slots(torch.tensor(slots, dtype=torch.int64)):
        return mm.base(input_ids=x).logits.float()


def generate(
    mm: MultiLoraModel, jobs: list[SampleJob], max_len: int, tokenizer: object = None
) -> list[tuple[list[Sequence], list[float] | None]]:
    """Sample every job (``num_samples`` rows each) in one batch per generated token."""
    rows: list[_Row] = []
    for j, job in enumerate(jobs):
        for i in range(job.num_samples):
            rows.append(_Row(j, torch.Generator().manual_seed(job.seed * 1_000_003 + i)))
    prompt_lp: list[list[float] | None] = [None] * len(jobs)
    step = 0
    while True:
        live = [r for r in rows if r.done is None]
        for r in live:
            job = jobs[r.job]
            if len(r.tokens) >= job.max_tokens or len(job.prompt) + len(r.tokens) >= max_len:
                r.done = "length"
        live = [r for r in rows if r.done is None]
        if not live:
            break
        seqs = [jobs[r.job].prompt + r.tokens for r in live]
        logits = _forward(mm, seqs, [jobs[r.job].slot for r in live])
        if step == 0:
            _prompt_logprobs(jobs, live, logits, prompt_lp)
        for b, r in enumerate(live):
            job = jobs[r.job]
            tok, lp = _pick(logits[b, len(seqs[b]) - 1], job, r.gen)
            r.tokens.append(tok)
            r.logprobs.append(lp)
            if tok in job.stop_tokens or _hit_string(r.tokens, job, tokenizer):
                r.done = "stop"
        step += 1
    out: list[tuple[list[Sequence], list[float] | None]] = [([], lp) for lp in prompt_lp]
    for r in rows:
        out[r.job][0].append(Sequence(r.tokens, r.logprobs, r.done or "length"))
    return out


def _prompt_logprobs(
    jobs: list[SampleJob], live: list[_Row], logits: Tensor, out: list[list[float] | None]
) -> None:
    for b, r in enumerate(live):
        job = jobs[r.job]
        if not job.prompt_logprobs or out[r.job] is not None:
            continue
        lp = torch.log_softmax(logits[b, : len(job.prompt) - 1], -1)
        ids = torch.tensor(job.prompt[1:], dtype=torch.int64).view(-1, 1)
        vals = lp.gather(1, ids).view(-1).tolist() if len(job.prompt) > 1 else []
        out[r.job] = [math.nan, *vals]


def _hit_string(tokens: list[int], job: SampleJob, tokenizer: object) -> bool:
    if not job.stop_strings or tokenizer is None:
        return False
    text = tokenizer.decode(tokens)  # type: ignore[attr-defined]
    return any(s in text for s in job.stop_strings)
