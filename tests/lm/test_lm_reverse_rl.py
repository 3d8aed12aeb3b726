"""The reverse-text target, end to end on CPU (slow): SFT a LoRA adapter on ``reverse``,
``convert-adapter`` it into a run, RL it with GRPO in the service (real trainer and
orchestrator processes), then resume a new run from a mid-run checkpoint.

Choices (docs/lm.md): the packaged tiny-lm base (0.87M parameters, Llama-style), reverse
strings of 4-8 letters, SFT 45 steps (batch 32, lr 3e-3: sampled reward ~0.43, greedy test
0.62) so that SFT is useful but not saturated, then 50 GRPO steps of 16 prompts x 8 samples
(lr 2e-3, 2 update epochs, clip 0.2, no KL, max_async_level 1). "Reward" is the mean
verifier reward of each step's sampled completions (temperature 1), as the orchestrator
logs it; SFT reward = the step-0 rollout, sampled with the converted SFT adapter. The
resumed run starts a new run folder from the step-30 checkpoint (adapter + Adam state).
About 1.5-2 minutes on 2 loaded cores.
"""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

import pytest
import torch

from proc_helpers import Procs, read_jsonl, wait_for
from skillbank.cli.main import main as cli_main
from skillbank.library.core import PolicyLibrary
from skillbank.lm.domains import get_domain
from skillbank.lm.evaluate import library_lm, score
from skillbank.service.protocol.paths import RunPaths

SFT_STEPS = 45
RL_STEPS = 50
MID = 30
RESUMED_STEPS = 10


def _rewards(run: RunPaths) -> list[float]:
    by_step = {r["step"]: r["reward"] for r in read_jsonl(run.orchestrator_log) if "reward" in r}
    return [by_step[s] for s in sorted(by_step)]


def _orch(run: RunPaths, max_steps: int) -> None:
    run.control.mkdir(parents=True, exist_ok=True)
    text = (
        f'kind = "lm"\ndomain = "reverse"\nmax_steps = {max_steps}\nlearning_rate = 2e-3\n'
        "prompts_per_step = 16\ngroup_size = 8\nseed = 0\n"
    )
    tmp = run.control / ".orch.tmp"
    tmp.write_text(text)
    tmp.replace(run.orch_toml)


@pytest.mark.slow
def test_reverse_sft_then_service_rl_and_resume(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    out, sft = tmp_path / "out", tmp_path / "sft_reverse"
    args = ["lm", "sft", "--domain", "reverse", "--out", str(sft), "--steps", str(SFT_STEPS)]
    assert cli_main([*args, "--lr", "3e-3", "--eval-n", "200", "--quiet"]) == 0
    sft_test = json.loads((sft / "skill.json").read_text())["scores"]["reverse"]

    procs = Procs(tmp_path)
    try:
        cfg = tmp_path / "trainer.toml"
        cfg.write_text(
            f'output_dir = "{out}"\nlm_base = "tiny-lm"\nmax_concurrent_runs = 1\n'
            "checkpoint_interval = 10\nkeep_checkpoints = 3\n"
        )
        trainer = procs.start("trainer", "trainer", "--config", str(cfg))
        wait_for(lambda: (out / "trainer.json").is_file(), 120, "trainer.json", [trainer])
        run = RunPaths(out, "rev")
        assert cli_main(["convert-adapter", str(sft), str(run.root)]) == 0
        _orch(run, RL_STEPS)
        orch = procs.start("orch", "orchestrator", "--run", str(run.root))
        wait_for(lambda: run.checkpoint_stable(RL_STEPS).is_file(), 480, "RL run", [trainer])
        rewards = _rewards(run)
        assert len(rewards) == RL_STEPS, procs.log("orch")
        sft_reward, last = rewards[0], statistics.mean(rewards[-5:])
        print(
            f"SFT test score {sft_test:.3f}; RL rewards by step: "
            + " ".join(f"{r:.2f}" for r in rewards)
        )
        assert max(statistics.mean(rewards[i : i + 5]) for i in range(RL_STEPS - 4)) >= 0.65
        assert last >= 0.65 and last > sft_reward + 0.05, (sft_reward, last)
        orch.wait(60)

        # the RL run becomes a library skill; its greedy test score beats the SFT adapter's
        lib = tmp_path / "lmlib"
        assert cli_main(["library", "add", str(lib), str(run.root), "--name", "reverse_rl"]) == 0
        library = PolicyLibrary.load(lib)
        assert library.skill_meta("reverse_rl")["task"] == {"domain": "reverse"}
        rl_test = score(library_lm(library), library.slot_of("reverse_rl"), get_domain("reverse"))
        print(f"greedy test score: SFT {sft_test:.3f} -> RL {rl_test:.3f}")
        assert rl_test > sft_test + 0.05

        # resume a new run from the mid-run checkpoint (adapter + optimiser state)
        resumed = RunPaths(out, "rev_resumed")
        resumed.checkpoints.mkdir(parents=True)
        shutil.copytree(run.checkpoint(MID), resumed.checkpoint(MID))
        _orch(resumed, MID + RESUMED_STEPS)
        procs.start("orch2", "orchestrator", "--run", str(resumed.root))
        wait_for(
            lambda: resumed.checkpoint_stable(MID + RESUMED_STEPS).is_file(),
            240,
            "resumed run",
            [trainer],
        )
        after = _rewards(resumed)
        print("resumed rewards: " + " ".join(f"{r:.2f}" for r in after))
        assert len(after) == RESUMED_STEPS and after[0] >= 0.6
        assert statistics.mean(after) >= 0.65
        resume_log = resumed.trainer_log.read_text()
        assert f"from checkpoint {MID}, optimiser state restored" in resume_log
    finally:
        procs.stop_all()
