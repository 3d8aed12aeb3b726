"""The official ``tinker`` SDK, unmodified, against a local ``skillbank serve`` process:
every supported call, the errors of bad input (in the SDK's error format, naming the
field, no other tenant affected), and a kill -9 restart from saved state."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

tinker = pytest.importorskip("tinker")
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from serve_helpers import (  # noqa: E402
    KEY_A,
    KEY_B,
    encode,
    free_port,
    make_model_dir,
    service_client,
    start_server,
)

from proc_helpers import Procs  # noqa: E402

types = tinker.types
LIMIT = 65536
FLAGS = ("--max-tenants", "4", "--sampler-slots", "2", "--max-request-bytes", str(LIMIT))


class Served:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.base = make_model_dir(folder / "base")
        self.out = folder / "out"
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = start_server(self.folder, self.base, self.out, self.port, *FLAGS)

    def log(self) -> str:
        return (self.folder / "serve.log").read_text(errors="replace")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    s = Served(tmp_path_factory.mktemp("serve_sdk"))
    s.start()
    yield s
    if s.proc is not None:
        Procs.stop(s.proc)


def _datum(text: str, weights: list[float] | None = None) -> types.Datum:
    ids = encode(text)
    w = weights if weights is not None else [1.0] * (len(ids) - 1)
    return types.Datum(
        model_input=types.ModelInput.from_ints(ids[:-1]),
        loss_fn_inputs={"target_tokens": ids[1:], "weights": w},
    )


def _is_datum(text: str, adv: float) -> types.Datum:
    ids = encode(text)
    n = len(ids) - 1
    return types.Datum(
        model_input=types.ModelInput.from_ints(ids[:-1]),
        loss_fn_inputs={"target_tokens": ids[1:], "logprobs": [-3.0] * n, "advantages": [adv] * n},
    )


def test_training_sampling_and_checkpoints(served: Served) -> None:
    sc = service_client(served.port)
    base = str(served.base.resolve())
    caps = tinker.RestClient(base_url=f"http://127.0.0.1:{served.port}", api_key=KEY_A)
    assert caps.get_server_capabilities().result().supported_models[0].model_name == base
    tc = sc.create_lora_training_client(base_model=base, rank=4, seed=0).result()
    info = tc.get_info()
    assert info.lora_rank == 4 and info.model_data.tokenizer_id == base
    assert tc.get_tokenizer().decode(encode("abc")) == "abc"  # the base folder's tokenizer

    data = [_datum("the cat sat"), _datum("on the mat")]
    first = tc.forward(data, "cross_entropy").result()
    again = tc.forward(data, "cross_entropy").result()  # forward leaves no gradient or step
    assert first.metrics["loss:sum"] == pytest.approx(again.metrics["loss:sum"], abs=1e-6)
    assert len(first.loss_fn_outputs) == 2
    assert first.loss_fn_outputs[0]["logprobs"].shape == [len(encode("the cat sat")) - 1]
    losses = []
    for _ in range(6):
        fb = tc.forward_backward(data, "cross_entropy")
        opt = tc.optim_step(types.AdamParams(learning_rate=2e-2, weight_decay=0.01))
        losses.append(fb.result().metrics["loss:sum"])
        assert opt.result().metrics["step:max"] >= 1
    assert losses[-1] < 0.8 * losses[0]
    out = tc.forward_backward([_is_datum("abc abc", 1.0)], "importance_sampling").result()
    assert out.metrics["loss:sum"] < 0  # -sum(ratio * A) with A > 0
    tc.optim_step(types.AdamParams(learning_rate=1e-3, grad_clip_norm=1.0)).result()

    state = tc.save_state("after-sft").result().path
    assert state == f"tinker://{tc.model_id}/weights/after-sft"
    run = served.out / f"run_{tc.model_id.replace(':', '.')}"
    assert (run / "checkpoints" / "step_7" / "STABLE").is_file()
    assert (run / "checkpoints" / "step_7" / "weight" / "adapter_config.json").is_file()
    sampler_path = tc.save_weights_for_sampler("s1").result().path
    assert (run / "broadcasts" / "step_7" / "adapter_model.safetensors").is_file()
    listed = caps.list_checkpoints(tc.model_id).result().checkpoints
    assert {c.tinker_path for c in listed} >= {state, sampler_path}

    sampler = tc.create_sampling_client(sampler_path).result()
    prompt = types.ModelInput.from_ints(encode("the "))
    params = types.SamplingParams(max_tokens=6, temperature=0.7, seed=5, stop=[])
    a = sampler.sample(prompt, 3, params).result()
    b = sampler.sample(prompt, 3, params).result()
    assert [s.tokens for s in a.sequences] == [s.tokens for s in b.sequences]  # seeded
    assert all(len(s.tokens) == 6 and s.stop_reason == "length" for s in a.sequences)
    assert all(len(s.logprobs or []) == 6 for s in a.sequences)
    greedy = types.SamplingParams(max_tokens=4, temperature=0.0, stop=[encode("t")[0]])
    g = sampler.sample(types.ModelInput.from_ints(encode("the ca")), 1, greedy).result()
    assert g.sequences[0].stop_reason in ("stop", "length")
    lps = sampler.compute_logprobs(types.ModelInput.from_ints(encode("the cat"))).result()
    assert lps[0] is None and all(x is not None and x < 0 for x in lps[1:])
    # the sampler saved at step 7 samples the trained adapter, not the base
    direct = tc.save_weights_and_get_sampling_client().result()
    base_s = sc.create_sampling_client(base_model=base).result()
    lp_trained = direct.compute_logprobs(types.ModelInput.from_ints(encode("the cat"))).result()
    lp_base = base_s.compute_logprobs(types.ModelInput.from_ints(encode("the cat"))).result()
    assert lp_trained == pytest.approx(lps, abs=1e-5)
    assert sum(lp_trained[1:]) > sum(lp_base[1:]) + 0.5

    # load_state into a second tenant: same outputs as the first
    tc2 = sc.create_training_client_from_state_with_optimizer(state).result()
    assert tc2.model_id != tc.model_id
    probe = [_datum("the cat sat")]
    lp1 = tc.forward(probe, "cross_entropy").result().loss_fn_outputs[0]["logprobs"].tolist()
    lp2 = tc2.forward(probe, "cross_entropy").result().loss_fn_outputs[0]["logprobs"].tolist()
    assert lp1 == pytest.approx(lp2, abs=1e-6)


def _fails(fn, *needles: str) -> str:
    with pytest.raises(Exception) as info:  # noqa: B017  # the SDK's own error types
        fn()
    text = str(info.value)
    for n in needles:
        assert n in text, text
    return text


def test_bad_input_names_the_field_and_spares_others(served: Served) -> None:
    base = str(served.base.resolve())
    sc = service_client(served.port)
    tc = sc.create_lora_training_client(base_model=base, rank=2, seed=1).result()
    url = f"http://127.0.0.1:{served.port}"
    good = [_datum("hello")]
    before = tc.forward(good, "cross_entropy").result().metrics["loss:sum"]

    bad_len = types.Datum(
        model_input=types.ModelInput.from_ints(encode("abcd")),
        loss_fn_inputs={"target_tokens": encode("bcde"), "weights": [1.0, 1.0]},
    )
    _fails(lambda: tc.forward_backward([bad_len], "cross_entropy").result(), "weights", "[4]")
    _fails(lambda: tc.forward_backward(good, "cispo").result(), "not supported", "cispo")
    nan = _is_datum("abc", float("nan"))
    _fails(
        lambda: tc.forward_backward([nan], "importance_sampling").result(),
        "loss_fn_inputs.advantages",
        "NaN",
    )
    big = [_datum("ab " * 3000)]
    _fails(lambda: tc.forward_backward(big, "cross_entropy").result(), "413")
    # wrong key, unknown model id, another tenant's model id
    wrong = service_client(served.port, "tml-not-a-key-at-all-0000")
    _fails(lambda: wrong.create_lora_training_client(base_model=base, rank=2).result(), "401")
    rest_a = tinker.RestClient(base_url=url, api_key=KEY_A)
    rest_b = tinker.RestClient(base_url=url, api_key=KEY_B)
    _fails(lambda: rest_a.list_checkpoints("m0000000000000000").result(), "404", "model_id")
    _fails(lambda: rest_b.list_checkpoints(tc.model_id).result(), "404", tc.model_id)
    _fails(lambda: rest_a.get_training_run(tc.model_id).result(), "not supported by skillbank")
    path = tc.save_state("mine").result().path
    sc_b = service_client(served.port, KEY_B)
    _fails(lambda: sc_b.create_training_client_from_state(path).result(), "path", "no model")
    # the tenant is unaffected and still trains
    assert tc.forward(good, "cross_entropy").result().metrics["loss:sum"] == pytest.approx(
        before, abs=1e-6
    )
    tc.forward_backward(good, "cross_entropy").result()
    assert tc.optim_step(types.AdamParams(learning_rate=1e-2)).result().metrics["step:max"] == 1


def test_peft_adapter_loads_into_a_tenant(served: Served) -> None:
    """An adapter saved by ``peft`` itself, placed as a run's step-0 checkpoint (what
    convert-adapter writes), loads into a tenant and gives peft's log-probabilities."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from skillbank.lora import peft_io
    from skillbank.service.protocol import checkpoint as ckpt
    from skillbank.service.protocol.paths import OutPaths

    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_pretrained(str(served.base), dtype=torch.float32)
    peft_cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"])
    pm = get_peft_model(hf, peft_cfg)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    pm.save_pretrained(str(served.folder / "peft_adapter"))
    ids = encode("the cat sat")
    with torch.no_grad():
        logits = pm(input_ids=torch.tensor([ids[:-1]])).logits[0]
    want = torch.log_softmax(logits, -1).gather(1, torch.tensor(ids[1:]).view(-1, 1)).view(-1)

    adapter = peft_io.read_adapter(served.folder / "peft_adapter")
    out = OutPaths(served.out)
    run = out.run("imported")
    run.root.mkdir()
    state = dict(adapter.state)
    ckpt.write_checkpoint(run, 0, ckpt.adapter_tensors(state), state, out.staging, "base")

    sc = service_client(served.port, KEY_B)  # an operator's run: any key may load it
    tc = sc.create_training_client_from_state("tinker://imported/weights/step_0").result()
    got = tc.forward([_datum("the cat sat")], "cross_entropy").result()
    assert got.loss_fn_outputs[0]["logprobs"].tolist() == pytest.approx(want.tolist(), abs=1e-5)


def test_no_free_slot(served: Served) -> None:
    base = str(served.base.resolve())
    sc = service_client(served.port, KEY_B)
    clients = []
    with pytest.raises(Exception, match="no free slot"):  # noqa: B017
        for seed in range(5):  # 4 slots, some already taken by the other tests
            clients.append(
                sc.create_lora_training_client(base_model=base, rank=2, seed=seed).result()
            )
    assert len(clients) < 4  # the slots that were still free were handed out


def test_kill9_restart_resumes_from_saved_state(tmp_path: Path) -> None:
    s = Served(tmp_path)
    s.start()
    base = str(s.base.resolve())
    sc = service_client(s.port)
    tc = sc.create_lora_training_client(base_model=base, rank=4, seed=3).result()
    data = [_datum("resume me")]
    for _ in range(3):
        tc.forward_backward(data, "cross_entropy")
        tc.optim_step(types.AdamParams(learning_rate=2e-2)).result()
    path = tc.save_state("ckpt").result().path
    want = tc.forward(data, "cross_entropy").result().loss_fn_outputs[0]["logprobs"].tolist()
    assert s.proc is not None
    Procs.kill9(s.proc)
    s.start()  # same outputs folder, same port
    try:
        # the old client's model id is served again, from its newest stable checkpoint
        got = tc.forward(data, "cross_entropy").result().loss_fn_outputs[0]["logprobs"].tolist()
        assert got == pytest.approx(want, abs=1e-6)
        # a new SDK process resumes from the saved state, Adam state included
        sc2 = service_client(s.port)
        tc2 = sc2.create_training_client_from_state_with_optimizer(path).result()
        lp2 = tc2.forward(data, "cross_entropy").result().loss_fn_outputs[0]["logprobs"].tolist()
        assert lp2 == pytest.approx(want, abs=1e-6)
        tc2.forward_backward(data, "cross_entropy")
        assert (
            tc2.optim_step(types.AdamParams(learning_rate=2e-2)).result().metrics["step:max"] == 4
        )
    finally:
        Procs.stop(s.proc)
