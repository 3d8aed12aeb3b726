"""The multi-run orchestrator (``orchestrator --run A --run B`` / ``--all OUT``): one
process, one batched act per env step over every run's adapter, each run's rollouts in
its own folder with its own slot's data; one run's failure ends that run only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from svc_helpers import fake_trainer, write_orch, write_trainer_toml

from proc_helpers import Procs, read_jsonl, wait_for
from skillbank.algos.distributions import make_distribution
from skillbank.lora import MultiLoraModel
from skillbank.service.kinds import load_run_config
from skillbank.service.kinds.ppo.multi import MultiPPO
from skillbank.service.kinds.ppo.stacked import StackedPolicy
from skillbank.service.protocol.checkpoint import write_broadcast
from skillbank.service.protocol.info import TrainerInfo
from skillbank.service.protocol.paths import OutPaths, steps
from skillbank.service.protocol.rollout_io import load_tensors


def _adapters(model: MultiLoraModel, n: int) -> list[dict]:
    """``n`` different adapters (slot states) of the test model."""
    states = []
    for i in range(n):
        model.reset_slot(0, 4, 8.0, generator=torch.Generator().manual_seed(10 + i))
        for layer in model.lora_layers().values():  # B != 0: the adapters act differently
            with torch.no_grad():
                layer.lora_B[0].normal_(0.0, 0.5, generator=torch.Generator().manual_seed(i))
        states.append(model.slot_state(0))
    return states


def test_stacked_policy_matches_each_merged_adapter() -> None:
    torch.manual_seed(0)
    from skillbank.models import ActorCritic, ActorCriticConfig

    model = MultiLoraModel(ActorCritic(ActorCriticConfig(4, "discrete", 2, [16, 16])), 1, 8)
    states = _adapters(model, 3)
    stacked = StackedPolicy(model, 3)
    merged = []
    for s, state in enumerate(states):
        model.load_slot_state(0, state)
        stacked.load(s, model)
        merged.append(model.merged_copy(0))
    x = torch.randn(3, 5, 4)
    out, value = stacked(x)
    for s in range(3):
        want_out, want_value = merged[s](x[s])
        assert torch.allclose(out[s], want_out, atol=1e-5)
        assert torch.allclose(value[s], want_value, atol=1e-5)
        one_out, one_value = stacked.one(s, x[s, :2])
        assert torch.allclose(one_value, want_value[:2], atol=1e-5)
    assert not torch.allclose(out[0], out[1], atol=1e-3)  # the slots really differ
    stacked.clear(1)
    plain = model.plain_base()
    assert torch.allclose(stacked(x)[1][1], plain(x[1])[1], atol=1e-5)


def _drive(group: MultiPPO, until, limit: int = 20_000) -> list:  # noqa: ANN001
    ended = []
    for _ in range(limit):
        if until():
            return ended
        ended += group.tick()[0]
    raise AssertionError("the runs did not get there")


def _setup(tmp_path: Path, k: int = 1) -> tuple[TrainerInfo, MultiLoraModel, Path]:
    out = tmp_path / "out"
    info, model = fake_trainer(out, k)
    return info, model, out


def test_one_group_serves_runs_of_different_shapes_with_their_own_slots(tmp_path: Path) -> None:
    info, model, out = _setup(tmp_path, k=1)
    shapes = {"a": (2, 8), "b": (4, 16), "c": (3, 8)}  # envs_per_task, rollout_steps
    runs = {
        n: write_orch(out, n, max_steps=4, envs_per_task=e, rollout_steps=t, seed=i)
        for i, (n, (e, t)) in enumerate(shapes.items())
    }
    states = dict(zip(runs, _adapters(model, len(runs))))
    group = MultiPPO(info, num_slots=3)
    for run in runs.values():
        cfg, tasks = load_run_config(run.orch_toml, info)
        group.add(run, cfg, tasks)
    staging = OutPaths(out).staging
    for n, run in runs.items():
        write_broadcast(run, 0, states[n], None, staging, "test")
    # k = 1: rollouts 0 and 1 need only broadcast 0; rollout 2 waits for broadcast 1
    _drive(group, lambda: all(r.rollout(1).is_dir() for r in runs.values()))
    for _ in range(200):
        group.tick()
    assert all(steps(r.rollouts) == [0, 1] for r in runs.values())
    for n, run in runs.items():
        write_broadcast(run, 1, states[n], None, staging, "test")
    _drive(group, lambda: all(r.rollout(2).is_dir() for r in runs.values()))
    for n, run in runs.items():
        write_broadcast(run, 2, states[n], None, staging, "test")
    ended = _drive(group, lambda: not group.runs)
    assert sorted(e.run.name for e in ended) == ["a", "b", "c"]
    assert all(e.code == 0 and e.why.startswith("done") for e in ended)

    for n, run in runs.items():
        envs, t = shapes[n]
        assert steps(run.rollouts) == [0, 1, 2, 3]
        log = read_jsonl(run.orchestrator_log)
        assert [r["step"] for r in log] == [0, 1, 2, 3]
        assert [r["policy_step"] for r in log] == [0, 0, 1, 2]
        tensors = load_tensors(run.rollout_tensors(3))
        assert tensors["obs"].shape == (envs * t, 4) and tensors["logp"].shape == (envs * t,)
        meta = json.loads(run.rollout_meta(3).read_text())
        assert meta["policy_step"] == 2 and len(meta["obs_norm"]["mean"]) == 4
        # the rows were acted by THIS run's adapter: its values and log-probs recomputed
        model.load_slot_state(0, states[n])
        policy_out, value = model.merged_copy(0)(tensors["obs"])
        assert torch.allclose(value, tensors["values"], atol=1e-4), n
        logp = make_distribution("discrete", policy_out).log_prob(tensors["actions"])
        assert torch.allclose(logp, tensors["logp"], atol=1e-4), n


def _two_runs(tmp_path: Path, k: int, max_steps: int) -> tuple[MultiPPO, dict]:
    """Runs a, b served by one group, broadcast 0 of both published (async bound k)."""
    info, model, out = _setup(tmp_path, k=k)
    runs = {
        n: write_orch(out, n, max_steps=max_steps, envs_per_task=2, rollout_steps=8) for n in "ab"
    }
    group = MultiPPO(info, num_slots=2)
    for run in runs.values():
        cfg, tasks = load_run_config(run.orch_toml, info)
        group.add(run, cfg, tasks)
        write_broadcast(run, 0, model.slot_state(0), None, OutPaths(out).staging, "test")
    return group, runs


def test_a_crashing_env_ends_its_run_only(tmp_path: Path) -> None:
    group, runs = _two_runs(tmp_path, k=2, max_steps=3)
    crash = next(r for r in group.runs if r.run.name == "a")

    def boom(action: object) -> None:
        raise ValueError("the simulator exploded")

    crash.env.step = boom
    ended = _drive(group, lambda: not group.runs)
    by_name = {e.run.name: e for e in ended}
    assert by_name["a"].code == 2 and "the simulator exploded" in by_name["a"].why
    assert by_name["b"].code == 0 and steps(runs["b"].rollouts) == [0, 1, 2]
    assert steps(runs["a"].rollouts) == []


def test_a_deleted_run_leaves_and_the_others_go_on(tmp_path: Path) -> None:
    import shutil

    group, runs = _two_runs(tmp_path, k=3, max_steps=4)
    _drive(group, lambda: runs["a"].rollout(0).is_dir())
    shutil.rmtree(runs["a"].root)
    ended = _drive(group, lambda: not group.runs)
    by_name = {e.run.name: e for e in ended}
    assert by_name["a"].code == 0 and "disappeared" in by_name["a"].why
    assert by_name["b"].code == 0 and steps(runs["b"].rollouts) == [0, 1, 2, 3]
    assert not runs["a"].root.exists()


def test_one_process_serves_several_runs_beside_a_bad_config(tmp_path: Path, procs: Procs) -> None:
    """Real processes: a trainer and ONE orchestrator for runs a, b (different shapes)
    and c (a bad orch.toml): c gets its error, a and b train to the end."""
    out = tmp_path / "out"
    a = write_orch(out, "a", task="cartpole/long-pole", max_steps=6, rollout_steps=32)
    b = write_orch(
        out, "b", task="cartpole/reversed", max_steps=4, envs_per_task=4, rollout_steps=16
    )
    c = write_orch(out, "c", text='task = "cartpole"\nmax_stepz = 4\n')
    toml = write_trainer_toml(tmp_path / "trainer.toml", out, max_concurrent_runs=3)
    trainer = procs.start("trainer", "trainer", "--config", str(toml))
    args = ["--run", str(a.root), "--run", str(b.root), "--run", str(c.root)]
    orch = procs.start("orch", "orchestrator", *args)
    wait_for(lambda: orch.poll() is not None, 120, "the orchestrator ends", [trainer])
    text = procs.log("orch")
    assert orch.returncode == 2, text  # the worst run's code: c's config error
    assert "c: error:" in text and "max_stepz" in text and "orch.toml" in text
    for run, last in ((a, 5), (b, 3)):
        log = read_jsonl(run.orchestrator_log)
        assert [r["step"] for r in log] == list(range(last + 1))
        assert all(r["step"] - r["policy_step"] <= 1 for r in log)  # max_async_level = 1
    wait_for(lambda: a.newest_stable_checkpoint() == 6, 60, "a's last checkpoint", [trainer])
    wait_for(lambda: b.newest_stable_checkpoint() == 4, 60, "b's last checkpoint", [trainer])
    assert not c.rollouts.exists()
    assert Procs.stop(trainer) == 0


def test_all_joins_new_runs_and_respects_another_orchestrators_lock(
    tmp_path: Path, procs: Procs
) -> None:
    out = tmp_path / "out"
    a = write_orch(out, "a", max_steps=3, envs_per_task=2, rollout_steps=16)
    solo = write_orch(out, "solo", max_steps=3, envs_per_task=2, rollout_steps=16)
    toml = write_trainer_toml(tmp_path / "trainer.toml", out, max_concurrent_runs=3)
    trainer = procs.start("trainer", "trainer", "--config", str(toml))
    one = procs.start("one", "orchestrator", "--run", str(solo.root))
    wait_for(lambda: solo.rollout(0).is_dir(), 60, "the one-run orchestrator works", [trainer])
    many = procs.start("many", "orchestrator", "--all", str(out))
    wait_for(lambda: a.rollout(2).is_dir(), 60, "a served by --all", [trainer, many])
    b = write_orch(out, "b", max_steps=3, envs_per_task=2, rollout_steps=16)  # joins later
    wait_for(lambda: b.rollout(2).is_dir(), 60, "b joins", [trainer, many])
    wait_for(lambda: one.poll() is not None, 60, "the one-run orchestrator ends", [trainer])
    assert one.returncode == 0, procs.log("one")
    wait_for(lambda: "solo: done" in procs.log("many"), 30, "--all sees solo done", [many])
    # solo's lock kept --all out while the one-run orchestrator served it
    assert "solo: starting at step 3" in procs.log("many")
    assert [r["step"] for r in read_jsonl(solo.orchestrator_log)] == [0, 1, 2]
    assert Procs.stop(many) == 0
    assert "b: joined" in procs.log("many")
    assert Procs.stop(trainer) == 0


@pytest.mark.parametrize("args", [[], ["--run", "x/run_a", "--all", "x"]])
def test_orchestrator_needs_runs_or_all(tmp_path: Path, procs: Procs, args: list[str]) -> None:
    p = procs.start("orch", "orchestrator", *args)
    p.wait(60)
    assert p.returncode == 2 and "--all" in procs.log("orch")
