"""The control setting without training: KL loss, neurons, adapter masks and merged weights."""

import pytest
import torch

from skillbank.interference.control import ControlOptions, control_setting
from skillbank.interference.hessian import gradient, hvp, loss_value
from skillbank.interference.measures import flat, neuron_change
from skillbank.tasks import get_suite


def _specs() -> list:
    suite = get_suite("cartpole-physics")
    return [suite[0], suite[3]]


def test_full_mode_neurons_and_kl_loss() -> None:
    st = control_setting(
        ControlOptions(specs=_specs(), mode="full", loss_states=64, eval_episodes=2)
    )
    assert set(st.neuron_layers) == {"pi.0", "pi.2", "v.0", "v.2"}
    delta = {k: torch.zeros_like(p) for k, p in st.params.items()}
    delta["pi.4.weight"][:, 7] = 1.0  # column 7 of the head: hidden unit 7 of pi.2 only
    change = neuron_change(delta, st.neuron_layers)
    assert torch.nonzero(change["pi.2"]).squeeze(1).tolist() == [7]
    assert float(change["pi.0"].sum()) == 0.0
    loss, data = st.domains[0].make_loss()
    theta = st.theta()
    assert data["states"].shape == (64, 4)
    assert loss_value(loss, theta) == pytest.approx(0.0, abs=1e-7)  # KL to itself
    assert float(flat(gradient(loss, theta)).abs().max()) < 1e-6  # minimum: zero gradient
    g = {k: torch.randn_like(t) for k, t in theta.items()}
    hv = hvp(loss, theta, g)
    assert sum(float((hv[k] * g[k]).sum()) for k in g) > 0  # curvature (Fisher) is PSD
    assert 0.0 <= st.domains[1].score() <= 100.0


def test_shared_adapter_masks_and_merged_weights() -> None:
    opts = ControlOptions(specs=_specs(), mode="shared-adapter", base_steps=1024, rank=8, seed=0)
    st = control_setting(opts)
    assert all(".lora_" in k for k in st.params)
    assert st.active is not None
    # pi.0: in = 4 < rank 8, so only 4 rows of A (and 4 columns of B) can train
    assert int(st.active["base.pi.0.lora_A"].sum()) == 4 * 4
    assert int(st.active["base.pi.0.lora_B"].sum()) == 64 * 4
    assert int(st.active["base.pi.2.lora_A"].sum()) == 8 * 64
    theta = st.theta()
    with torch.no_grad():
        for k, p in st.params.items():
            if k.endswith("lora_B"):
                p.normal_(0, 0.1)
    eff = st.effective(st.theta())
    model = st.domains[0].train.__self__.m  # type: ignore[attr-defined]  # the ControlModel
    merged = model.module.merged_copy(0)
    torch.testing.assert_close(eff["base.pi.2.weight"], merged.pi[2].weight)
    st.load(theta)
    assert torch.equal(st.params["base.pi.2.lora_B"], theta["base.pi.2.lora_B"])
