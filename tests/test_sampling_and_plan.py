"""Random patch sampling, the training plan, the config, per-image scores and the threshold choice."""

from __future__ import annotations

import numpy as np
import pytest

from tem_keras.data.sampling import PatchSampler, clamp_patch_size
from tem_keras.analysis.metrics import per_image_scores
from tem_keras.training import TrainingConfig, parse_duration, plan_training
from tem_keras.training.callbacks import warmup_cosine
from tem_keras.training.heldout import choose_threshold, scores
from tem_keras.training.plan import choose_model, default_time_limit, particle_diameters


from test_data import disks as _disc_mask  # noqa: E402  (discs of radius r at the centres)


def test_sampler_reaches_every_border_and_stays_inside():
    image = np.arange(50 * 70, dtype=np.float32).reshape(50, 70)
    sampler = PatchSampler([image], [np.zeros((50, 70), np.uint8)], 16, foreground_fraction=0.5)
    origins = np.array([sampler.origin(np.random.default_rng(s))[1:] for s in range(3000)])
    assert origins[:, 0].min() == 0 and origins[:, 0].max() == 50 - 16
    assert origins[:, 1].min() == 0 and origins[:, 1].max() == 70 - 16
    patch, mask = sampler.sample(7)
    row, col = divmod(int(patch[0, 0]), 70)  # the pixel values encode their position
    np.testing.assert_array_equal(patch, image[row:row + 16, col:col + 16])
    assert mask.shape == (16, 16)


def test_sampler_honours_the_foreground_fraction():
    shape = (200, 200)
    mask = _disc_mask(shape, [(100, 100)], 3)  # 29 particle pixels out of 40,000
    sampler = PatchSampler([np.zeros(shape, np.float32)], [mask], 16, foreground_fraction=1 / 3)
    centred = 0
    n = 3000
    for seed in range(n):
        _, patch_mask = sampler.sample(seed)
        centred += patch_mask.any()
    # uniform patches contain the disc with probability ≈ 22²/185² ≈ 1.4 %
    expected = 1 / 3 + (2 / 3) * (22 * 22) / (185 * 185)
    assert abs(centred / n - expected) < 0.03
    never = PatchSampler([np.zeros(shape, np.float32)], [mask], 16, foreground_fraction=0.0)
    assert np.mean([never.sample(s)[1].any() for s in range(1000)]) < 0.05


def test_hand_masked_images_give_their_share_of_the_patches():
    """One small masked image beside three large pseudo-labelled ones: by positions it would give
    about 4 % of the patches; shared, it gives half, and the others keep their ratio."""
    images = [np.full((40, 40), 0, np.float32)] + [np.full((120, 120), k, np.float32) for k in (1, 2, 3)]
    masks = [np.zeros(i.shape, np.uint8) for i in images]
    sampler = PatchSampler(images, masks, 16)
    assert sampler.weights[0] == pytest.approx(25 ** 2 / (25 ** 2 + 3 * 105 ** 2))
    sampler.share([True, False, False, False], 0.5)
    drawn = np.array([sampler.sample(s)[0][0, 0] for s in range(4000)])
    assert abs(np.mean(drawn == 0) - 0.5) < 0.04
    for k in (1, 2, 3):
        assert abs(np.mean(drawn == k) - 0.5 / 3) < 0.04
    unchanged = PatchSampler(images, masks, 16).weights
    np.testing.assert_array_equal(PatchSampler(images, masks, 16).share([True] * 4, 0.5).weights, unchanged)
    # "at least": three large images selected already give 96 % and keep it; exactly: half
    np.testing.assert_array_equal(PatchSampler(images, masks, 16).share([False, True, True, True], 0.5,
                                                                          at_least=True).weights, unchanged)
    assert PatchSampler(images, masks, 16).share([False, True, True, True], 0.5).weights[1:].sum() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="one flag per image"):
        sampler.share([True], 0.5)
    with pytest.raises(ValueError, match="between 0 and 1"):
        sampler.share([True, False, False, False], 1.0)


def test_sampler_is_a_pure_function_of_the_seed_and_draws_every_class():
    shape = (64, 64)
    mask = np.zeros(shape, np.uint8)
    mask[5:8, 5:8], mask[50:53, 50:53] = 1, 2
    sampler = PatchSampler([np.random.default_rng(0).normal(size=shape).astype(np.float32)], [mask], 16,
                           foreground_fraction=1.0)
    a, b = sampler.sample(11), sampler.sample(11)
    np.testing.assert_array_equal(a[0], b[0])
    seen = {int(c) for s in range(200) for c in np.unique(sampler.sample(s)[1]) if c}
    assert seen == {1, 2}
    with pytest.raises(ValueError, match="at least 32 px"):
        PatchSampler([np.zeros((20, 40), np.float32)], [np.zeros((20, 40), np.uint8)], 32)


def test_patch_size_is_clamped_to_the_smallest_image_and_the_downsampling_factor():
    assert clamp_patch_size(256, [(369, 369), (512, 600)], 8) == 256
    assert clamp_patch_size(512, [(369, 369), (512, 600)], 8) == 368
    assert clamp_patch_size(512, [(369, 500)], 16) == 368
    assert clamp_patch_size(64, [(37, 50)], 1) == 37
    with pytest.raises(ValueError, match="down-sampling factor 16"):
        clamp_patch_size(256, [(12, 300)], 16)


def test_plan_clamps_the_patch_with_a_note_and_sizes_the_model_to_the_particles():
    rng = np.random.default_rng(0)
    small = [rng.normal(size=(120, 140)).astype(np.float32) for _ in range(3)]
    masks = [_disc_mask((120, 140), [(30, 30), (80, 90)], 5) for _ in range(3)]
    plan = plan_training(TrainingConfig().with_recipe(), small, masks, num_classes=2)
    assert plan.patch_size == 120 and plan.patch_size % 8 == 0
    assert any("smallest training image is 120 px" in n for n in plan.notes)
    assert plan.model["name"] == "residual_unet" and plan.model["n_blocks"] == 3
    assert plan.time_limit_s == pytest.approx(540.0) and plan.epochs is None
    assert 4 <= plan.steps_per_epoch <= 50
    # a budget-planned run: about 12 epochs, validation at most 8 % of the budget
    plan.fill_epochs(step_seconds=0.25, image_seconds=0.5, remaining_s=100.0, n_val=3)
    assert plan.monitored_images == 1  # 0.08 × 100 s / (12 × 0.5 s) = 1.3 images
    assert plan.steps_per_epoch == int((100 / 12 - 0.5) / 0.25) == 31
    assert plan.epochs == int(np.floor(100 / (31 * 0.25 + 0.5))) == 12
    assert plan.epochs * plan.validation_seconds <= 0.08 * 100
    plan.fill_epochs(step_seconds=0.5, image_seconds=0.1, remaining_s=1000.0, n_val=40)
    assert plan.monitored_images == 16 and plan.steps_per_epoch == int((1000 / 12 - 1.6) / 0.5)
    assert plan.epochs == 12 and plan.epochs * plan.validation_seconds <= 0.08 * 1000
    assert plan.planned_share["optimiser_steps"] == pytest.approx(12 * 163 * 0.5 / 540, abs=1e-3)
    assert "% in optimiser steps" in plan.summary()
    plan.steps_per_epoch = 40  # steps the user fixed are kept
    plan.fill_epochs(step_seconds=1.0, image_seconds=2.0, remaining_s=200.0, n_val=20, fixed_steps=True)
    assert plan.steps_per_epoch == 40 and plan.epochs == 4 and plan.monitored_images == 1
    assert "random patches" in plan.summary() and "receptive field 96 px" in plan.summary()
    fixed = plan_training(TrainingConfig(epochs=3, patch_size=64, batch_size=2, model="unet").with_recipe(),
                          small, masks, num_classes=2)
    assert (fixed.epochs, fixed.patch_size, fixed.batch_size, fixed.time_limit_s) == (3, 64, 2, None)
    assert fixed.model == {"name": "unet", "num_classes": 2}


@pytest.mark.slow
def test_receptive_field_of_the_chosen_model_grows_with_the_particles():
    from tem_keras.models.receptive_fields import receptive_field
    from tem_keras.models.registry import build_model

    masks = [_disc_mask((600, 600), [(300, 300)], r) for r in (4, 40, 60, 120)]
    diameters = [particle_diameters([m]) for m in masks]
    np.testing.assert_allclose([d[0] for d in diameters], [2 * np.sqrt(49 / np.pi), 80.3, 120.3, 240.3],
                               rtol=0.02)
    chosen = [choose_model(d) for d in diameters]
    assert [c["pool_sizes"] for c in chosen] == [[2, 2, 2], [2, 2, 2, 2], [2, 2, 2, 4], [2, 2, 4, 4]]
    for spec, d in zip(chosen, diameters):
        assert receptive_field(build_model(dict(spec, base_filters=1))) >= 2 * d[0] + 16


def test_default_budget_grows_with_the_training_images_and_patches_stay_256():
    assert [default_time_limit("cpu", n) for n in (0, 50, 51, 150, 500)] == [540, 540, 543, 840, 1800]
    assert default_time_limit("gpu", 10) == 1200 and default_time_limit("gpu", 10**4) == 1800
    rng = np.random.default_rng(0)
    images = [rng.normal(size=(600, 600)).astype(np.float32) for _ in range(60)]
    masks = [_disc_mask((600, 600), [(300, 300)], 120)] * 60  # large particles: a deep model...
    plan = plan_training(TrainingConfig().with_recipe(), images, masks, num_classes=2)
    assert plan.model["pool_sizes"] == [2, 2, 4, 4] and plan.receptive_field_px > 256
    assert (plan.patch_size, plan.batch_size) == (256, 8)  # ... still trained on 8 patches of 256²
    assert plan.time_limit_s == 540 + 3 * 10


def test_a_few_large_particles_among_many_small_ones_set_the_receptive_field():
    """A mixed collection: 2000 particles of 6 px and 20 of 150 px. Counted, 99 % are small; by
    area, 86 % of the particle pixels are in the large ones, and the model must see them whole."""
    from tem_keras.training.plan import large_diameter

    diameters = np.array([6.0] * 2000 + [150.0] * 20)
    assert np.percentile(diameters, 90) == 6.0 and large_diameter(diameters) == 150.0
    assert choose_model(diameters)["pool_sizes"] == [2, 2, 4, 4]  # 504 px ≥ 2 × 150 + 16
    assert choose_model([6.0] * 2000)["pool_sizes"] == [2, 2, 2]
    assert large_diameter([]) == 0.0


def test_training_config_validates_and_round_trips():
    config = TrainingConfig(time_limit="1h30min", epochs=5, split=[0.6, 0.2, 0.2])
    assert config.time_limit == 5400.0 and config.split == (0.6, 0.2, 0.2)
    assert TrainingConfig.from_dict(config.to_dict()) == config
    assert config.with_recipe().learning_rate == 1e-3 and config.with_recipe().patience is None
    paper = TrainingConfig(recipe="paper").with_recipe()
    assert (paper.learning_rate, paper.patch_size, paper.patience, paper.schedule) == (1e-4, 512, 10, "constant")
    assert parse_duration("90s") == 90 and parse_duration(2.5) == 2.5 and parse_duration("10min") == 600
    for bad, match in [(dict(epochs=0), "epochs"), (dict(epochs=-1), "epochs"), (dict(patch_size=0), "patch_size"),
                       (dict(patch_size=-5), "patch_size"), (dict(batch_size=0), "batch_size"),
                       (dict(learning_rate=-1), "learning_rate"), (dict(learning_rate=0), "learning_rate"),
                       (dict(split=(0.5, 0.5, 0.5)), "split"), (dict(patience=-1), "patience"),
                       (dict(time_limit="soon"), "time_limit"), (dict(time_limit=0), "time_limit"),
                       (dict(recipe="magic"), "recipe"), (dict(folds=1), "folds"),
                       (dict(foreground_fraction=1.5), "foreground_fraction"), (dict(epochs=2.5), "epochs")]:
        with pytest.raises(ValueError, match=match):
            TrainingConfig(**bad)


def test_warmup_cosine_schedule():
    values = [warmup_cosine(s / 100, 1e-3) for s in range(101)]
    assert values[0] == pytest.approx(1e-5) and values[1] == pytest.approx(2e-4)  # 5 % warm-up
    assert values[5] == pytest.approx(1e-3) and max(values) == pytest.approx(1e-3)
    assert values[-1] == pytest.approx(0.0, abs=1e-12) and values[50] == pytest.approx(
        0.5e-3 * (1 + np.cos(np.pi * 45 / 95)))
    assert all(a >= b for a, b in zip(values[5:], values[6:]))
    assert warmup_cosine(1.7, 1e-3) == 0.0 and warmup_cosine(-1, 1e-3) == pytest.approx(1e-5)


def test_per_image_scores_equal_a_numpy_reference():
    rng = np.random.default_rng(3)
    preds = [rng.random((20, 30)) > 0.5, rng.random((8, 8)) > 0.3, np.zeros((5, 5), bool)]
    truths = [rng.random((20, 30)) > 0.4, rng.random((8, 8)) > 0.6, np.zeros((5, 5), bool)]

    def dice(p, t):
        return 1.0 if not (p.sum() + t.sum()) else 2 * (p & t).sum() / (p.sum() + t.sum())

    reference = [dice(p, t) for p, t in zip(preds, truths)]
    out = per_image_scores(preds, truths)
    assert out["per_image"]["dice"]["mean"] == pytest.approx(np.mean(reference))
    assert out["per_image"]["dice"]["std"] == pytest.approx(np.std(reference))
    pooled = 2 * sum((p & t).sum() for p, t in zip(preds, truths)) / sum(p.sum() + t.sum() for p, t in zip(preds, truths))
    assert out["pooled"]["dice"] == pytest.approx(pooled)
    iou = [(p & t).sum() / (p | t).sum() for p, t in zip(preds[:2], truths[:2])] + [1.0]
    assert out["per_image"]["iou"]["mean"] == pytest.approx(np.mean(iou))
    assert out["n_images"] == 3 and [r["dice"] for r in out["images"]] == pytest.approx(reference)


def test_threshold_is_chosen_on_held_out_images_only_when_there_are_enough():
    rng = np.random.default_rng(1)
    masks = [(rng.random((16, 16)) > 0.7).astype(np.uint8) for _ in range(4)]
    # a model that is right but under-confident: particles at 0.3, background at 0.1
    probs = [np.stack([1 - p, p], -1) for p in (np.where(m == 1, 0.3, 0.1) for m in masks)]
    chosen = choose_threshold(probs, masks)
    assert 0.1 < chosen["threshold"] <= 0.3 and chosen["dice_at_threshold"] == pytest.approx(1.0)
    assert chosen["dice_at_0.5"] == pytest.approx(0.0) and chosen["source"] == "held-out images"
    assert scores(probs, masks, chosen["threshold"])["per_image"]["dice"]["mean"] == pytest.approx(1.0)
    few = choose_threshold(probs[:2], masks[:2])
    assert few["threshold"] == 0.5 and "too few" in few["source"]
    confident = [np.stack([1 - p, p], -1) for p in (np.where(m == 1, 0.9, 0.05) for m in masks)]
    assert choose_threshold(confident, masks)["threshold"] == 0.5  # no threshold beats 0.5
    three = [np.stack([0.9 - 0.5 * m, 0.1 + 0.2 * m, 0.3 * m], -1) for m in masks]
    assert choose_threshold(three, masks)["threshold"] == 0.5  # multi-class: argmax


def test_folds_are_disjoint_cover_the_non_test_images_and_are_reproducible():
    from tem_keras.training.folds import fold_splits

    stems = [f"img{i:02d}" for i in range(13)]
    folds = fold_splits(stems, 5, test=["img03", "img07"], seed=2)
    vals = [set(f["val"]) for f in folds]
    assert sorted(s for v in vals for s in v) == sorted(set(stems) - {"img03", "img07"})
    assert all(a.isdisjoint(b) for i, a in enumerate(vals) for b in vals[i + 1:])
    assert sorted(len(v) for v in vals) == [2, 2, 2, 2, 3]
    for fold in folds:
        assert set(fold["train"]) | set(fold["val"]) == set(stems) - {"img03", "img07"}
        assert not set(fold["train"]) & set(fold["val"]) and fold["test"] == ["img03", "img07"]
    assert fold_splits(stems, 5, test=["img03", "img07"], seed=2) == folds
    assert fold_splits(stems, 5, test=["img03", "img07"], seed=3) != folds
    with pytest.raises(ValueError, match="needs at least 5 images"):
        fold_splits(stems[:4], 5)


def test_held_out_subset_is_reproducible_and_keeps_pairs():
    from tem_keras.training.heldout import HeldOut

    images = [np.full((4, 4), i, np.float32) for i in range(30)]
    masks = [np.full((4, 4), i % 2, np.uint8) for i in range(30)]
    heldout = HeldOut([f"s{i}" for i in range(30)], images, masks)
    part = heldout.subset(16, seed=1)
    assert len(part) == 16 and part.stems == heldout.subset(16, seed=1).stems
    assert part.stems != heldout.subset(16, seed=2).stems
    for stem, image, mask in zip(part.stems, part.images, part.masks):
        i = int(stem[1:])
        assert image[0, 0] == i and mask[0, 0] == i % 2
    assert heldout.subset(40) is heldout


def test_epoch_budget_fills_the_time_left_at_the_speed_measured_so_far():
    from tem_keras.training.callbacks import EpochBudget

    budget = EpochBudget(10, 4, deadline=100.0)
    assert budget.update(1, 10.0, now=10.0) and budget.epochs == 10   # 90 s left at 10 s/epoch
    assert budget.update(2, 5.0, now=15.0) and budget.epochs == 19    # first epoch (tracing) left out
    assert budget.total_steps == 19 * 4
    assert budget.update(3, 20.0, now=35.0) and budget.epochs == 6    # median of 5 and 20 s: slower
    assert not budget.update(4, 20.0, now=95.0) and budget.epochs == 4  # the next would overrun
    fixed = EpochBudget(3, 4)  # epochs given by the user: never re-planned
    assert fixed.update(1, 1.0) and fixed.update(2, 1.0) and not fixed.update(3, 1.0)
    assert fixed.epochs == 3
