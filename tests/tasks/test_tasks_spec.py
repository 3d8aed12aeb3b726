"""TaskSpec, parse_task and the suite registry."""

from __future__ import annotations

import json

import pytest

from skillbank.tasks import SUITES, TaskSpec, get_suite, list_families, list_suites, parse_task


def test_round_trip_through_json() -> None:
    specs = [t for tasks in SUITES.values() for t in tasks]
    specs.append(parse_task("acrobot:link_length_1=1.3,gravity=0.1"))
    for spec in specs:
        back = TaskSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
        assert back == spec and back.to_dict() == spec.to_dict() and hash(back) == hash(spec)
        assert type(back.params[next(iter(back.params))]) is float if back.params else True


def test_parse_forms() -> None:
    assert parse_task("cartpole") == TaskSpec("cartpole", {}, "cartpole")
    spec = parse_task("cartpole: pole_length=1.5, force_mag=5")
    assert spec.params == {"force_mag": 5.0, "pole_length": 1.5}
    assert spec.name == "cartpole:force_mag=5,pole_length=1.5"
    assert parse_task(spec.name) == spec
    assert parse_task("cartpole/long-pole") == TaskSpec(
        "cartpole", {"pole_length": 6.0}, "cartpole/long-pole"
    )
    # parameters equal to the default are dropped, so equal tasks compare equal
    assert parse_task("cartpole:force_mag=10") == parse_task("cartpole")
    assert parse_task("pendulum:mass=0.1").params["mass"] == 0.1


def test_errors_list_valid_names() -> None:
    with pytest.raises(ValueError, match="valid families: acrobot, cartpole, halfcheetah"):
        parse_task("cartpol:force_mag=2")
    with pytest.raises(ValueError, match="valid parameters: cart_mass, force_mag, gravity"):
        parse_task("cartpole:length=2")
    with pytest.raises(
        ValueError, match=r"valid families: .*valid suite tasks: .*cartpole/long-pole"
    ):
        parse_task("cartpole/longer-pole")
    with pytest.raises(
        ValueError, match="valid suites: cartpole-physics, cw10, cw20, halfcheetah-physics"
    ):
        get_suite("cartpole")
    with pytest.raises(ValueError, match="must be > 0"):
        parse_task("cartpole:pole_mass=0")
    with pytest.raises(ValueError, match="not a number"):
        parse_task("cartpole:pole_mass=heavy")
    with pytest.raises(ValueError, match="finite"):
        TaskSpec("pendulum", {"gravity": float("nan")})
    with pytest.raises(ValueError, match="keys must be"):
        TaskSpec.from_dict({"family": "cartpole", "parms": {}})


def test_suites() -> None:
    assert list_suites() == [
        "cartpole-physics",
        "cw10",
        "cw20",
        "halfcheetah-physics",
        "halfcheetah-vel",
        "mt10",
        "mt10-onehot",
        "mt50",
        "mt50-onehot",
        "pendulum-physics",
    ]
    cart = get_suite("cartpole-physics")
    assert len(cart) == 7 and cart[0].params == {} and len({t.params.__repr__() for t in cart}) == 7
    assert len(get_suite("pendulum-physics")) == 5
    assert len(get_suite("halfcheetah-physics")) == 4
    assert [t.full_params()["target_velocity"] for t in get_suite("halfcheetah-vel")] == [
        0.5,
        1.0,
        2.0,
        3.0,
    ]
    assert set(list_families()) >= {"cartpole", "pendulum", "acrobot", "hopper", "walker2d"}
    get_suite("cartpole-physics").clear()  # a copy: the registry is untouched
    assert len(get_suite("cartpole-physics")) == 7
