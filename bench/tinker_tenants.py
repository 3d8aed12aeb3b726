"""Tinker tenants benchmark: N training clients driving the same loop through the official
``tinker`` SDK at the same time (their forward_backward calls fused into shared passes)
vs the same N loops one after another, on one ``skillbank serve`` process.

Run: python bench/tinker_tenants.py [--threads 1] [--steps 6] [--repeats 3] [--base DIR]

Loop per tenant: ``steps`` x (forward_backward(cross_entropy) on ``--datums`` datums of
``--tokens`` tokens, optim_step, wait for both). Aggregate throughput = tenant-steps per
second of wall time; the ratio is concurrent / one-after-another, measured in the same run
on the same server (peer: time-sliced serving, SkyRL's 2.81x at 8 runs); the two are run
alternately ``--repeats`` times and the medians compared. Per-call framework overhead =
median SDK round trip of a forward call minus the median time of the same pass on an engine
in this process, the two measured alternately (HTTP, protobuf, queue, futures, polling).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

KEY = "tml-skillbank-bench-key-000000000"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--repeats", type=int, default=3, help="alternated repeats (default 3)")
    p.add_argument("--steps", type=int, default=6, help="loop steps per tenant (default 6)")
    p.add_argument("--datums", type=int, default=8, help="datums per forward_backward (8)")
    p.add_argument("--tokens", type=int, default=32, help="tokens per datum (default 32)")
    p.add_argument("--tenants", default="1,4,8", help="tenant counts (default 1,4,8)")
    p.add_argument("--window-ms", type=float, default=20.0, help="fusion window (default 20)")
    p.add_argument("--base", help="HF causal-LM folder (default: the packaged tiny-lm)")
    a = p.parse_args()
    os.environ["TINKER_TELEMETRY"] = "0"

    import tinker
    import torch

    from skillbank.lm.model import DEFAULT_BASE
    from skillbank.service.serve.client import free_port, healthy

    types = tinker.types
    base = str(Path(a.base or DEFAULT_BASE).resolve())
    counts = [int(x) for x in a.tenants.split(",")]
    torch.set_num_threads(a.threads)
    print(f"threads: server {a.threads}, bench process {torch.get_num_threads()}")
    print(f"base: {base}; loop: {a.steps} x (forward_backward {a.datums}x{a.tokens}, optim)")

    out = tempfile.mkdtemp(prefix="tinker-bench-")
    port = free_port()
    env = {**os.environ, "SKILLBANK_SERVE_API_KEYS": KEY, "OMP_NUM_THREADS": str(a.threads)}
    cmd = [sys.executable, "-m", "skillbank.cli.serve", "serve", "--base", base, "--out", out]
    cmd += ["--port", str(port), "--threads", str(a.threads), "--max-tenants", str(max(counts))]
    cmd += ["--fuse-window-ms", str(a.window_ms)]
    log = open(Path(out) / "serve.log", "wb")  # noqa: SIM115  # owned by the process
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while not healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"server did not start: {Path(out) / 'serve.log'}")
            time.sleep(0.1)
        sc = tinker.ServiceClient(base_url=url, api_key=KEY)
        clients = [
            sc.create_lora_training_client(base_model=base, rank=8, seed=i).result()
            for i in range(max(counts))
        ]
        gen = torch.Generator().manual_seed(0)

        def datum() -> types.Datum:
            ids = torch.randint(3, 20, (a.tokens + 1,), generator=gen).tolist()
            return types.Datum(
                model_input=types.ModelInput.from_ints(ids[:-1]),
                loss_fn_inputs={"target_tokens": ids[1:], "weights": [1.0] * a.tokens},
            )

        data = [datum() for _ in range(a.datums)]
        adam = types.AdamParams(learning_rate=1e-3)

        def loop(tc: object) -> None:
            for _ in range(a.steps):
                fb = tc.forward_backward(data, "cross_entropy")  # type: ignore[attr-defined]
                opt = tc.optim_step(adam)  # type: ignore[attr-defined]
                fb.result()
                opt.result()

        loop(clients[0])  # warm-up

        def one_after_another(n: int) -> float:
            t0 = time.perf_counter()
            for tc in clients[:n]:
                loop(tc)
            return time.perf_counter() - t0

        def concurrent(n: int) -> float:
            threads = [threading.Thread(target=loop, args=(tc,)) for tc in clients[:n]]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            return time.perf_counter() - t0

        for n in counts:
            seqs, concs = [], []
            for _ in range(a.repeats):
                seqs.append(one_after_another(n))
                concs.append(concurrent(n))
            seq, conc = statistics.median(seqs), statistics.median(concs)
            steps = n * a.steps
            print(
                f"tenants {n}: one after another {steps / seq:6.2f} steps/s, concurrent "
                f"{steps / conc:6.2f} steps/s, aggregate throughput ratio {seq / conc:5.2f}x"
            )

        small = [data[0]]
        engine_pass = _engine_pass(base, small)
        rtt, local = [], []
        for _ in range(15):
            t0 = time.perf_counter()
            clients[0].forward(small, "cross_entropy").result()
            rtt.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            engine_pass()
            local.append(time.perf_counter() - t0)
        sdk_ms, engine_ms = 1000 * statistics.median(rtt), 1000 * statistics.median(local)
        print(
            f"per-call: SDK forward round trip {sdk_ms:.1f} ms, engine pass {engine_ms:.1f} ms, "
            f"framework overhead {sdk_ms - engine_ms:.1f} ms"
        )
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()
    print((Path(out) / "serve.log").read_text().strip().splitlines()[-1])


def _engine_pass(base: str, data: list) -> Callable[[], object]:
    """The same forward pass on an in-process engine (no HTTP), as a function."""
    import torch

    from skillbank.service.serve.engine import Engine, Work, load_hf_base
    from skillbank.service.serve.losses import check_datums
    from skillbank.service.serve.wire import Datum

    model, tok = load_hf_base(base)
    eng = Engine(model, tok, train_slots=1, sampler_slots=1, capacity=8)
    eng.init_slot(0, 8, 0, {})
    rows = [
        Datum(
            torch.tensor(d.model_input.to_ints()),
            {"target_tokens": torch.tensor(d.loss_fn_inputs["target_tokens"].tolist())},
        )
        for d in data
    ]
    loss = check_datums(rows, "cross_entropy", {}, eng.vocab, eng.max_len)
    return lambda: eng.fused([Work(0, rows, loss, {}, True)])


if __name__ == "__main__":
    main()
