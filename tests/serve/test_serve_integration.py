"""Two tenants through the real SDK at the same time: an SFT loop (cross_entropy) on one,
an RL loop (importance_sampling on sampled completions, group-relative rewards) on the
other. The SFT loss falls, the RL reward rises, and their forward_backward calls were
fused into shared passes."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest

tinker = pytest.importorskip("tinker")
pytest.importorskip("starlette")

from serve_helpers import encode, free_port, make_model_dir, service_client, start_server  # noqa: E402

from proc_helpers import Procs  # noqa: E402

types = tinker.types
TARGET = encode("a")[0]


def _sft(tc, out: dict) -> None:
    data = []
    for text in ("the cat sat", "on the mat", "a cat ate", "the rat ran"):
        ids = encode(text)
        data.append(
            types.Datum(
                model_input=types.ModelInput.from_ints(ids[:-1]),
                loss_fn_inputs={"target_tokens": ids[1:], "weights": [1.0] * (len(ids) - 1)},
            )
        )
    losses = []
    for _ in range(15):
        fb = tc.forward_backward(data, "cross_entropy")
        opt = tc.optim_step(types.AdamParams(learning_rate=2e-2))
        losses.append(fb.result().metrics["loss:sum"])
        opt.result()
    out["losses"] = losses


def _rl(tc, out: dict) -> None:
    prompt = encode("x=")
    rewards = []
    for step in range(15):
        sampler = tc.save_weights_and_get_sampling_client().result()
        params = types.SamplingParams(max_tokens=4, temperature=1.0, seed=step, stop=[])
        res = sampler.sample(types.ModelInput.from_ints(prompt), 8, params).result()
        r = [sum(t == TARGET for t in s.tokens) / len(s.tokens) for s in res.sequences]
        mean = sum(r) / len(r)
        rewards.append(mean)
        data = []
        for s, ri in zip(res.sequences, r):
            full = prompt + list(s.tokens)
            n_prompt = len(prompt) - 1
            adv = [0.0] * n_prompt + [ri - mean] * len(s.tokens)
            old = [0.0] * n_prompt + list(s.logprobs or [])
            data.append(
                types.Datum(
                    model_input=types.ModelInput.from_ints(full[:-1]),
                    loss_fn_inputs={"target_tokens": full[1:], "logprobs": old, "advantages": adv},
                )
            )
        fb = tc.forward_backward(data, "importance_sampling")
        opt = tc.optim_step(types.AdamParams(learning_rate=5e-2))
        fb.result()
        opt.result()
    out["rewards"] = rewards


@pytest.mark.slow
def test_sft_and_rl_tenants_concurrently(tmp_path: Path) -> None:
    base = make_model_dir(tmp_path / "base")
    port = free_port()
    proc = start_server(tmp_path, base, tmp_path / "out", port, "--fuse-window-ms", "50")
    try:
        sc = service_client(port)
        a = sc.create_lora_training_client(base_model=str(base.resolve()), rank=8, seed=0).result()
        b = sc.create_lora_training_client(base_model=str(base.resolve()), rank=8, seed=1).result()
        out_a: dict = {}
        out_b: dict = {}
        threads = [
            threading.Thread(target=_sft, args=(a, out_a)),
            threading.Thread(target=_rl, args=(b, out_b)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=240)
        assert "losses" in out_a and "rewards" in out_b, (tmp_path / "serve.log").read_text()
        losses, rewards = out_a["losses"], out_b["rewards"]
        print("sft loss", [round(x, 2) for x in losses])
        print("rl reward", [round(x, 3) for x in rewards])
        assert losses[-1] < 0.7 * losses[0]
        assert sum(rewards[-3:]) / 3 > sum(rewards[:3]) / 3 + 0.2
    finally:
        Procs.stop(proc)
    log = (tmp_path / "serve.log").read_text()
    m = re.search(r"(\d+) passes ran (\d+) forward/forward_backward calls", log)
    assert m is not None, log
    assert int(m.group(2)) > int(m.group(1))  # some passes served both tenants
