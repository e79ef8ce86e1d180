"""The one dataclass <-> JSON codec (synthkit._codec), used by configs, mask params, grid records."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pytest

from synthkit._codec import from_dict, to_dict
from synthkit.config import ConfigError, RunConfig
from synthkit.config import from_dict as config_from_dict
from synthkit.masks.params import from_dict as params_from_dict


@dataclass(frozen=True)
class Inner:
    size: tuple[int, int]
    spacing: tuple[float, ...] = (1.0,)


@dataclass(frozen=True)
class Outer:
    inner: Inner
    mode: Literal["a", "b"] = "a"
    scale: float | None = None
    flag: bool = False
    names: dict[str, int] = field(default_factory=dict)


def test_round_trip_through_json_is_exact():
    obj = Outer(Inner((np.int64(3), 4), (0.1 + 0.2, np.float32(2.5).item())), "b", 1e-7, True, {"x": 1})
    data = json.loads(json.dumps(to_dict(obj)))
    assert data["inner"] == {"size": [3, 4], "spacing": [0.1 + 0.2, 2.5]}
    again = from_dict(Outer, data)
    assert again == obj and isinstance(again.inner.size, tuple)


@pytest.mark.parametrize(("data", "message"), [
    ({"inner": {"size": [1, 2]}, "colour": 1}, r"x: unknown keys colour for Outer"),
    ({"inner": {"size": [1, 2, 3]}}, r"x\.inner\.size: expected 2 values, got 3"),
    ({"inner": {"size": [1, 2.5]}}, r"x\.inner\.size: expected an integer, got 2\.5"),
    ({"inner": {"size": [True, 2]}}, r"expected an integer, got True"),
    ({"inner": {"size": [1, 2]}, "mode": "c"}, r"x\.mode: expected one of 'a', 'b', got 'c'"),
    ({"inner": {"size": [1, 2]}, "scale": "big"}, r"x\.scale: expected a number"),
    ({"inner": {"size": [1, 2]}, "flag": 1}, r"x\.flag: expected true/false"),
    ({"inner": {"size": [1, 2]}, "names": {"x": "one"}}, r"x\.names\.x: expected an integer"),
    ({"inner": [1, 2]}, r"x\.inner: expected an object, got list"),
    ({}, r"x: .*inner"),
])
def test_malformed_input_names_the_field(data, message):
    with pytest.raises(ValueError, match=message):
        from_dict(Outer, data, "x")


def test_integers_are_floats_where_floats_are_declared():
    assert from_dict(Outer, {"inner": {"size": [1.0, 2], "spacing": [1, 2]}, "scale": 3}) == \
        Outer(Inner((1, 2), (1.0, 2.0)), scale=3.0)


def test_each_caller_keeps_its_error_type():
    with pytest.raises(ConfigError, match="unknown keys"):
        config_from_dict(RunConfig, {"modle": {}})
    with pytest.raises(ConfigError, match="expected one of"):
        config_from_dict(RunConfig, {"train": {"precision": "fp64"}})
    with pytest.raises(ValueError, match="params: unknown keys") as err:
        params_from_dict(Inner, {"size": [1, 2], "depth": 3})
    assert not isinstance(err.value, ConfigError)
