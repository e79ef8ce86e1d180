"""Label-role resolution, op-spec parsing, parameter JSON round trip, sidecar validation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from synthkit.errors import UsageError
from synthkit.masks import chain_from_json, parse_op_specs, resolve_roles
from synthkit.masks.move import MoveParams
from synthkit.masks.params import ObjectTransform, from_dict, to_dict
from synthkit.masks.pipeline import case_rng, read_sidecar

BRATS = {"background": 0, "necrotic core": 1, "edema": 2, "enhancing": 3, "brain": 4}


def test_roles_defaults_from_names_and_numbers():
    r = resolve_roles(None, None, {"background": 0, "head": 1, "tumour": 2})
    assert (r.tumour, r.head) == ((2,), (1,))
    r = resolve_roles(None, None, BRATS)
    assert (r.tumour, r.head) == ((1, 2, 3), (4,))
    r = resolve_roles(["tumour"], ["brain"], BRATS)
    assert (r.tumour, r.head) == ((1, 2, 3), (4,))
    r = resolve_roles(None, None, {}, present=[0, 1, 2, 5])
    assert (r.tumour, r.head) == ((2, 5), (1,))
    r = resolve_roles(["2", "3"], ["1,4"], {})
    assert (r.tumour, r.head) == ((2, 3), (1, 4))


def test_roles_errors():
    with pytest.raises(UsageError, match="no head/brain label"):
        resolve_roles(None, None, {"background": 0, "necrotic core": 1, "edema": 2, "enhancing": 4})
    with pytest.raises(UsageError, match="both tumour and head"):
        resolve_roles(["1"], ["1"], {})
    with pytest.raises(UsageError, match="cyst"):
        resolve_roles(["cyst"], None, BRATS)
    with pytest.raises(UsageError, match="no tumour label"):
        resolve_roles(None, None, {}, present=[0, 1])


def test_one_list_of_head_words():
    """masks/labels.HEAD_WORDS is the one list: the words the mask tools and sampling's background
    rule (once training/preview.HEAD_NAMES) each kept, none lost."""
    from synthkit.masks.labels import HEAD_WORDS, is_head_name
    from synthkit.training.preview import has_head_label

    assert set(HEAD_WORDS) == {"head", "brain", "tissue", "skull"} | {"head", "brain", "body", "foreground",
                                                                       "skull", "whole_head"}
    assert all(is_head_name(w.upper()) for w in HEAD_WORDS) and not is_head_name("brain_tumour")
    assert resolve_roles(None, None, {"background": 0, "Foreground": 1, "lesion": 2}).head == (1,)
    assert has_head_label({"background": 0, "whole_head": 1}, None) and not has_head_label({"tumour": 2}, None)


def test_op_specs():
    specs = parse_op_specs(["move:elastic=1.5,per_component=true+deform", "place:radius_mm=4"])
    assert [s.name for s in specs] == ["move", "deform", "place"]
    assert specs[0].build_options().elastic == 1.5 and specs[0].build_options().per_component is True
    assert parse_op_specs(None)[0].name == "move" and parse_op_specs([])[0].name == "move"
    for bad, msg in (("warp", "unknown mask operation"), ("move:elastic", "key=value"),
                     ("move:elastic=lots", "not a valid float"), ("move:scale_min=0", "scale_min"),
                     ("place:keep_existing=maybe", "not a valid bool")):
        with pytest.raises(UsageError, match=msg):
            parse_op_specs([bad])


def test_params_json_round_trip_is_exact():
    rng = np.random.default_rng(0)
    p = MoveParams(shape=(8, 9, 10), spacing=(0.1 + 0.2, 1.0, 1.3), tumour_labels=(1, 2, 3),
                   head_labels=(4,), objects=(ObjectTransform(
                       center=tuple(rng.normal(size=3)), rotation_deg=(1 / 3, 0.0, -2.0),
                       scale=float(rng.uniform()), elastic=tuple(rng.normal(size=3 * 8)), elastic_grid=2),))
    assert from_dict(MoveParams, json.loads(json.dumps(to_dict(p)))) == p
    with pytest.raises(ValueError, match="unknown keys"):
        from_dict(MoveParams, {**to_dict(p), "colour": 1})
    with pytest.raises(ValueError, match="unknown mask operation"):
        chain_from_json([{"op": "warp", "params": {}}])


def test_sidecar_validation(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text("{not json")
    with pytest.raises(UsageError, match="not a JSON"):
        read_sidecar(bad)
    bad.write_text(json.dumps({"format": "other"}))
    with pytest.raises(UsageError, match="not a synthkit masks sidecar"):
        read_sidecar(bad)
    bad.write_text(json.dumps({"format": "synthkit.masks/1", "case": "a", "ops": [{"op": "move", "params": {"shape": 1}}]}))
    with pytest.raises(UsageError, match="bad operation parameters"):
        read_sidecar(bad)
    with pytest.raises(UsageError, match="no such"):
        read_sidecar(tmp_path / "missing.json")


def test_case_rng_depends_on_seed_case_and_index_only():
    draw = lambda *a: case_rng(*a).integers(1 << 30, size=4).tolist()
    assert draw(0, "a", 0) == draw(0, "a", 0)
    assert len({tuple(draw(*a)) for a in ((0, "a", 0), (1, "a", 0), (0, "b", 0), (0, "a", 1))}) == 4
