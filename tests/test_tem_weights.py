"""The shipped TEM pre-trained weights: file format, loading by name and shape, and the plan's choice."""

from __future__ import annotations

import numpy as np
import pytest

from tem_keras.models import build_model
from tem_keras.models import tem_weights
from tem_keras.models.tem_weights import available_keys, load_tem_weights, save_tem_weights, weights_key
from tem_keras.training.plan import POOL_LADDER, pretrained_key


def _spec(n_blocks, pools=None, classes=2):
    return {"name": "residual_unet", "n_blocks": n_blocks, "base_filters": 4,
            "pool_sizes": list(pools or [2] * n_blocks), "num_classes": classes}


@pytest.fixture
def weights_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(tem_weights, "WEIGHTS_DIR", tmp_path)
    return tmp_path


def test_round_trip_is_within_the_quantisation_error_and_ignores_pool_sizes(weights_dir):
    source = build_model(_spec(3))
    rng = np.random.default_rng(0)
    for layer in source.layers:  # non-trivial values everywhere, BN statistics included
        layer.set_weights([rng.normal(size=np.shape(w)).astype(np.float32) + (2.0 if w.ndim == 1 else 0.0)
                           for w in layer.get_weights()])
    path = save_tem_weights(source, weights_dir / f"{weights_key(_spec(3))}.npz", {"note": "test"})
    assert path.stem in available_keys()
    assert tem_weights.tem_weights_info(path.stem)["record"] == {"note": "test"}

    target = build_model(_spec(3, pools=(2, 4, 2)))  # same depth and filters, other pools
    report = load_tem_weights(target, path.stem)
    assert report["kept"] == [] and len(report["loaded"]) == sum(bool(l.weights) for l in target.layers)
    for a, b in zip(source.layers, target.layers):
        for wa, wb in zip(a.get_weights(), b.get_weights()):
            if wa.ndim >= 2:  # int8 per output channel: error ≤ half a step of 1/127 of the channel max
                step = np.abs(wa).reshape(-1, wa.shape[-1]).max(axis=0) / 127
                assert np.all(np.abs(wa - wb) <= step / 2 + 1e-7)
            else:  # float16
                np.testing.assert_allclose(wb, wa, rtol=1e-3)


def test_a_head_with_other_classes_keeps_its_initialisation(weights_dir):
    save_tem_weights(build_model(_spec(3)), weights_dir / "residual_unet_3b4.npz")
    target = build_model(_spec(3, classes=3))
    head = [l for l in target.layers if l.get_weights()][-1]
    before = [w.copy() for w in head.get_weights()]
    report = load_tem_weights(target, "residual_unet_3b4")
    assert report["kept"] == [head.name]
    for a, b in zip(before, head.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_plan_choice_of_pretrained_weights(weights_dir):
    save_tem_weights(build_model(_spec(3)), weights_dir / "residual_unet_3b4.npz")
    assert pretrained_key("auto", _spec(3)) == "residual_unet_3b4"
    assert pretrained_key("tem", _spec(3, pools=(4, 2, 2))) == "residual_unet_3b4"
    assert pretrained_key(None, _spec(3)) is None
    assert pretrained_key("auto", _spec(4)) is None  # none shipped for this depth: random init
    assert pretrained_key("auto", {"name": "unet"}) is None
    with pytest.raises(ValueError, match="no pre-trained TEM weights for unet"):
        pretrained_key("tem", {"name": "unet"})
    with pytest.raises(FileNotFoundError, match="residual_unet_4b4"):
        load_tem_weights(build_model(_spec(4)), "residual_unet_4b4")


def test_the_package_ships_weights_for_every_planned_depth():
    keys = available_keys()
    for pools in POOL_LADDER:
        spec = {"name": "residual_unet", "n_blocks": len(pools), "base_filters": 16, "pool_sizes": list(pools)}
        assert weights_key(spec) in keys
        model = build_model({**spec, "num_classes": 2})
        report = load_tem_weights(model, weights_key(spec))
        assert report["kept"] == []
    for key in keys:
        size_mb = (tem_weights.WEIGHTS_DIR / f"{key}.npz").stat().st_size / 1e6
        assert size_mb < 3.0, f"{key} is {size_mb:.1f} MB"


def test_every_shipped_file_states_how_well_it_segments_unseen_corpus_images():
    for key in available_keys():
        record = tem_weights.tem_weights_info(key)["record"]
        assert record["held_out_images"] >= 30 and record["held_out_seed"] != record["corpus_seed"], key
        assert 0.5 < record["held_out_dice"] <= 1.0 and record["held_out_dice_std"] > 0, key


def test_adding_to_a_record_keeps_the_weights_bit_for_bit(weights_dir):
    model = build_model(_spec(3))
    path = save_tem_weights(model, weights_dir / "residual_unet_3b4.npz", {"steps": 5})
    with np.load(path) as before:
        weights = {k: before[k] for k in before.files if k != "__record__"}
    assert tem_weights.add_to_record(path, held_out_dice=0.5) == {"steps": 5, "held_out_dice": 0.5}
    with np.load(path) as after:
        assert sorted(after.files) == sorted([*weights, "__record__"])
        for k, v in weights.items():
            assert after[k].dtype == v.dtype and np.array_equal(after[k], v), k
    assert tem_weights.tem_weights_info("residual_unet_3b4")["record"]["held_out_dice"] == 0.5


@pytest.mark.slow
def test_pretraining_records_its_provenance(weights_dir, tmp_path):
    from tem_keras.training.pretrain import make_corpus, pretrain

    corpus = make_corpus(tmp_path / "corpus", n_images=8, size=64, seed=7)
    spec = {"name": "residual_unet", "n_blocks": 3, "base_filters": 2, "pool_sizes": [2, 2, 2]}
    path = pretrain(corpus, spec, weights_dir / "residual_unet_3b2.npz", time_limit="8s",
                    run_dir=tmp_path / "run", seed=3, held_out_images=3)
    record = tem_weights.tem_weights_info(path.stem)["record"]
    assert record["corpus_images"] == 8 and record["corpus_size_px"] == 64 and record["corpus_seed"] == 7
    assert record["seed"] == 3 and record["steps"] >= 4 and record["wall_s"] > 0
    assert 0.0 <= record["test_dice"] <= 1.0 and 0.0 <= record["best_val_dice"] <= 1.0
    assert record["held_out_seed"] != record["corpus_seed"] and 1 <= record["held_out_images"] <= 3
    assert 0.0 <= record["held_out_dice"] <= 1.0 and record["held_out_size_px"] == 64
    assert record["split"]["train"] >= 1 and record["split"]["val"] >= 1 and sum(record["split"].values()) <= 8
