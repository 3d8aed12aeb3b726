"""Users' datasets (JSONL, JSON, Parquet, datasets folders; TRL's standard and
conversational formats) and reward functions (import path, TRL's signature, weights),
from Python and the CLI, and one clear error for each kind of bad input."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from hf_folders import qwen2

from skillbank.cli.main import main
from skillbank.errors import SkillbankError
from skillbank.lm.data import DatasetError, DatasetTask
from skillbank.lm.domains import get_domain
from skillbank.lm.rewards import RewardError, Rewards, exact_match, similarity

USER_REWARDS = """
def exact_match(completions, answer, **kwargs):
    return [float(c.strip() == a) for c, a in zip(completions, answer)]

def length_penalty(completions, **kwargs):
    return [-0.01 * len(c) for c in completions]

def raises(completions, **kwargs):
    raise RuntimeError("model server down")

def too_short(completions, **kwargs):
    return [0.0]

def nan(completions, **kwargs):
    return [float("nan")] * len(completions)

def chat_len(completions, prompts, **kwargs):
    assert all(c[0]["role"] == "assistant" for c in completions)
    assert all(isinstance(p, list) for p in prompts)
    return [float(len(c[0]["content"])) for c in completions]
"""


@pytest.fixture
def user_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user's folder outside the package: my_rewards.py and data.jsonl."""
    d = tmp_path / "user"
    d.mkdir()
    (d / "my_rewards.py").write_text(textwrap.dedent(USER_REWARDS))
    rows = [
        {"prompt": e.prompt, "answer": e.answer, "completion": e.answer}
        for e in get_domain("reverse").examples(12)
    ]
    (d / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.syspath_prepend(str(d))
    return d


def test_jsonl_and_user_reward_train_an_rl_skill_from_the_cli(
    user_dir: Path, tiny_base_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "skill"
    args = ["lm", "rl", "--dataset", str(user_dir / "data.jsonl"), "--base", str(tiny_base_dir)]
    args += ["--reward", "my_rewards:exact_match", "--reward", "my_rewards:length_penalty"]
    args += ["--reward-weights", "1,0.5", "--steps", "2", "--prompts", "2", "--group", "2"]
    assert main([*args, "--eval-n", "4", "--out", str(out), "--quiet"]) == 0
    meta = json.loads((out / "skill.json").read_text())
    assert meta["method"] == "grpo" and len(meta["train_reward"]) == 2
    assert meta["data"]["reward"] == ["my_rewards:exact_match", "my_rewards:length_penalty"]
    assert meta["data"]["reward_weights"] == [1.0, 0.5]
    assert all(r <= 1.0 for r in meta["train_reward"])
    sft = ["lm", "sft", "--dataset", str(user_dir / "data.jsonl"), "--base", str(tiny_base_dir)]
    assert (
        main([*sft, "--steps", "2", "--eval-n", "4", "--out", str(tmp_path / "s"), "--quiet"]) == 0
    )


def test_rewards_signature_weights_and_builtins(user_dir: Path) -> None:
    task = DatasetTask.load(
        user_dir / "data.jsonl",
        Rewards.from_specs(["my_rewards:exact_match", f"{user_dir}/my_rewards.py:length_penalty"]),
    )
    exs = task.examples(2)
    assert task.rewards([exs[0].answer, "zz"], exs) == pytest.approx(
        [1.0 - 0.01 * len(exs[0].answer), -0.02]
    )
    assert exact_match(["ab ", "x"], answer=["ab", "y"]) == [1.0, 0.0]
    assert similarity(["dcxa"], completion=["dcba"]) == pytest.approx([0.75])
    rows = get_domain("add").rows(3)
    assert set(rows[0]) == {"prompt", "completion"}


def test_file_formats(tmp_path: Path) -> None:
    rows = [{"prompt": "rev:ab=", "completion": "ba", "id": 1}]
    (tmp_path / "d.json").write_text(json.dumps(rows))
    t = DatasetTask.load(tmp_path / "d.json")
    assert t.train[0].prompt == "rev:ab=" and t.train[0].answer == "ba"
    assert t.reward_columns(t.train) == {"prompts": ["rev:ab="], "completion": ["ba"], "id": [1]}
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_list(rows * 3)
    ds.to_parquet(str(tmp_path / "d.parquet"))
    ds.save_to_disk(str(tmp_path / "folder"))
    for path in (tmp_path / "d.parquet", tmp_path / "folder"):
        t = DatasetTask.load(path)
        assert len(t.train) == 3 and t.train[2].answer == "ba"


def test_conversational_rows_use_the_chat_template(user_dir: Path, tmp_path: Path) -> None:
    from skillbank.lm.model import SlotLM, load_base
    from skillbank.lm.sft import sft_batch

    rows = [
        {
            "messages": [
                {"role": "user", "content": "rev:ab="},
                {"role": "assistant", "content": "ba"},
            ]
        },
        {
            "prompt": [{"role": "user", "content": "rev:cd="}],
            "completion": [{"role": "assistant", "content": "dc"}],
        },
    ]
    (tmp_path / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    task = DatasetTask.load(tmp_path / "chat.jsonl", Rewards.from_specs(["my_rewards:chat_len"]))
    assert [e.answer for e in task.train] == ["ba", "dc"]
    assert task.rewards(["abc", "d"], task.train) == [3.0, 1.0]
    model, tok = load_base(qwen2(tmp_path / "qwen2"))
    lm = SlotLM(model, tok)
    tokens, mask = sft_batch(lm, task.train)
    text = tok.hf.decode(tokens[0][: int(mask[0].nonzero()[0])])
    assert text == "<|im_start|>user\nrev:ab=<|im_end|>\n<|im_start|>assistant\n"
    assert tok.decode(tokens[1][mask[1]]) == "dc"


def test_bad_input_names_file_row_and_function(
    user_dir: Path, tiny_base_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from skillbank.lm.model import load_base

    (tmp_path / "bad.jsonl").write_text('{"prompt": "a"}\n{"question": "b"}\n')
    with pytest.raises(DatasetError, match=r"bad.jsonl: row 1: no column 'prompt'"):
        DatasetTask.load(tmp_path / "bad.jsonl")
    (tmp_path / "notjson.jsonl").write_text('{"prompt": "a"}\n{oops\n')
    with pytest.raises(DatasetError, match=r"notjson.jsonl: line 2: not valid JSON"):
        DatasetTask.load(tmp_path / "notjson.jsonl")
    task = DatasetTask.load(user_dir / "data.jsonl")
    exs = task.examples(3)
    for name, match in [
        ("raises", r"my_rewards:raises: raised RuntimeError: model server down"),
        ("too_short", r"my_rewards:too_short: returned 1 values for 3 rows"),
        ("nan", r"my_rewards:nan: row 0: returned nan \(not finite\)"),
    ]:
        task.reward_fns = Rewards.from_specs([f"my_rewards:{name}"])
        with pytest.raises(RewardError, match=match):
            task.rewards(["a", "b", "c"], exs)
    with pytest.raises(RewardError, match="'my_rewards' has no attribute 'nope'"):
        Rewards.from_specs(["my_rewards:nope"])
    with pytest.raises(RewardError, match="cannot import 'no_such_module'"):
        Rewards.from_specs(["no_such_module:f"])

    (tmp_path / "empty").mkdir()
    with pytest.raises(SkillbankError, match="empty/config.json: not a model folder"):
        load_base(tmp_path / "empty")
    no_eos = tmp_path / "no_eos"
    no_eos.mkdir()
    for f in tiny_base_dir.iterdir():
        (no_eos / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((no_eos / "tokenizer_config.json").read_text())
    cfg.pop("eos_token")
    (no_eos / "tokenizer_config.json").write_text(json.dumps(cfg))
    gen = json.loads((no_eos / "generation_config.json").read_text())
    gen.pop("eos_token_id", None)
    (no_eos / "generation_config.json").write_text(json.dumps(gen))
    with pytest.raises(SkillbankError, match="field 'eos_token': the tokenizer has no eos"):
        load_base(no_eos)

    rl = ["lm", "rl", "--dataset", str(user_dir / "data.jsonl"), "--base", str(tiny_base_dir)]
    rl += ["--out", str(tmp_path / "x"), "--quiet", "--steps", "1"]
    assert main(rl) == 2
    assert "no reward function given (--reward MODULE:FUNCTION)" in capsys.readouterr().err
    assert main([*rl, "--reward", "my_rewards:nan", "--prompts", "2", "--group", "2"]) == 2
    assert "reward function my_rewards:nan: row 0" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
