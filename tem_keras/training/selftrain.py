"""Noisy-student self-training: rounds of re-labelling with the model's own confident predictions.

With ``fit(DIR, labels="auto")`` the images without a mask first train on the labeller's
pseudo-labels, their edges ignored (round 0, :mod:`~tem_keras.training.labels`). Then, inside the
same time budget, each round re-labels them with the model just trained (the teacher): a pixel
whose particle probability is at least :data:`MARGIN` from the threshold takes the teacher's
label, the others are :data:`~tem_keras.data.datasets.IGNORE_LABEL` and carry no loss
(:func:`confident_labels`). The student, warm-started from the teacher's weights with its optimiser
state reset, trains on them with noise the teacher did not see: the 8 dihedral transforms plus
photometric noise (shot and Gaussian noise, brightness and contrast, illumination; no blur) on
30 % of the patches (:func:`student_augmentation`), at 0.3 times the teacher's learning rate (a
warm-started student fine-tunes). This is the noisy student of Xie et al. [1]_ with the
confidence threshold of FixMatch [2]_ applied per pixel.

Hand-drawn masks are never re-labelled. With some, they alone validate, and the round whose best
checkpoint scores the highest validation dice is the run's model; with none, the validation images
are re-labelled too (the teacher's labels at 0.5) and the last round's model is kept.

The rounds and the share of the budget of each are planned (:func:`plan_rounds`): half the
training time for round 0, the rest shared evenly by the students, 2 rounds when each student can
still train :data:`MIN_ROUND_EPOCHS` epochs of 4 steps after its re-labelling (with epochs given
instead of a time: ``ceil(epochs / 2)`` for round 0, the rest shared). The run folder gets
``selftrain.json`` (the plan and one record per round: its labels' confident share and agreement
with the previous labels, epochs, seconds, validation dice) and ``rounds/round<k>.keras`` (each
round's best weights); one line per round is printed. ``selftrain.json`` is written after every
round, so an interrupted run resumes: within round 0 from its last epoch (its state is backed
up), in a student round from the last finished round (:func:`finished_rounds`; the finished
rounds' labels are made again from their saved teachers, and the rounds left share the resumed
run's budget).

Measured (``benchmarks/selftrain.py``, 100 CPU optimiser steps per fit, zero masks): every round
beats Otsu by far, but none beats the labeller's pseudo-labels it started from nor a fit of the
same steps without rounds (insitu_tiny 0.889 against 0.894 and 0.898; sinter tiles 0.954 against
0.962 and 0.963). ``self_training=0`` (``--self-training 0``) turns the rounds off.

References
----------
.. [1] Xie, Q., Luong, M.-T., Hovy, E. & Le, Q. V. Self-training with noisy student improves
   ImageNet classification. CVPR (2020).
.. [2] Sohn, K. et al. FixMatch: simplifying semi-supervised learning with consistency and
   confidence. NeurIPS (2020).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from ..data.datasets import IGNORE_LABEL

__all__ = ["MARGIN", "MAX_ROUNDS", "MIN_ROUND_EPOCHS", "SelfTrainingPlan", "check_rounds", "confident_labels", "label_agreement",
           "plan_rounds", "student_augmentation", "SelfTraining", "finished_rounds", "round_line"]

#: a pixel is confident when its particle probability is at least this far from the threshold
MARGIN = 0.3
#: rounds after round 0 planned at most
MAX_ROUNDS = 2
#: the students' peak learning rate, as a share of the teacher's: a warm-started student
#: fine-tunes; at the full rate its first steps undo much of what it was given
STUDENT_RATE = 0.3
#: probability of each photometric augmentation of the students
STUDENT_NOISE = 0.3
#: a student round is planned only when it can train this many epochs of 4 steps
MIN_ROUND_EPOCHS = 3
#: share of the training time given to round 0 (the teacher trained on the labeller's labels)
FIRST_SHARE = 0.5
#: name of the record in the run folder
RECORD_FILE = "selftrain.json"


def confident_labels(probability: np.ndarray, threshold: float = 0.5, margin: float = MARGIN) -> np.ndarray:
    """Labels from a particle-probability map: 1 where ``p >= threshold + margin``, 0 where
    ``p <= threshold - margin``, :data:`IGNORE_LABEL` (255) in between.

    >>> confident_labels(np.array([0.05, 0.3, 0.5, 0.7, 0.95]))
    array([  0, 255, 255, 255,   1], dtype=uint8)
    """
    p = np.asarray(probability, np.float64)
    out = np.full(p.shape, IGNORE_LABEL, np.uint8)
    out[p <= threshold - margin] = 0
    out[p >= threshold + margin] = 1
    return out


def label_agreement(new: np.ndarray, previous: np.ndarray) -> dict:
    """How ``new`` labels compare with ``previous`` ones (both 0/1/:data:`IGNORE_LABEL`).

    Returns
    -------
    dict
        ``confident``: share of the pixels ``new`` labels; ``dice``: particle dice of the two on
        the pixels both label (1.0 when neither has a particle there); ``particles``: share of
        ``new``'s labelled pixels that are particles.
    """
    new, previous = np.asarray(new), np.asarray(previous)
    labelled = new != IGNORE_LABEL
    both = labelled & (previous != IGNORE_LABEL)
    a, b = (new == 1) & both, (previous == 1) & both
    total = int(a.sum()) + int(b.sum())
    return {"confident": float(labelled.mean()),
            "dice": 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total,
            "particles": float((new == 1).sum() / max(int(labelled.sum()), 1))}


def _pooled(rows: list[dict], weights: list[int]) -> dict:
    """Pixel-weighted mean of :func:`label_agreement` rows."""
    w = np.asarray(weights, float) / max(float(np.sum(weights)), 1.0)
    return {k: round(float(np.dot(w, [r[k] for r in rows])), 4) for k in ("confident", "dice", "particles")}


@dataclass
class SelfTrainingPlan:
    """Rounds after round 0 and each round's share of the training time (or its epochs).

    Attributes
    ----------
    rounds : int
        Student rounds after round 0 (0: no self-training).
    shares : list of float
        Share of the training time of round 0, 1, ...; with fixed epochs, ``epochs`` instead.
    epochs : list of int or None
        Epochs of each round when the user fixed the epochs.
    margin : float
        :data:`MARGIN` of :func:`confident_labels`.
    student_rate : float
        The students' peak learning rate as a share of round 0's (:data:`STUDENT_RATE`).
    reason : str
        Why this many rounds.
    """

    rounds: int
    shares: list = field(default_factory=list)
    epochs: list | None = None
    margin: float = MARGIN
    student_rate: float = STUDENT_RATE
    reason: str = ""

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        """The plan line of the self-training."""
        if not self.rounds:
            return f"self-training: none ({self.reason})"
        split = (" + ".join(str(e) for e in self.epochs) + " epochs" if self.epochs
                 else " / ".join(f"{100 * s:.0f} %" for s in self.shares) + " of the training time")
        return (f"self-training: round 0 on the pseudo-labels, then {self.rounds} noisy-student round(s) on the "
                f"model's confident pixels (p at least {self.margin:g} from the threshold), students at "
                f"{self.student_rate:g} x the learning rate; {split}")


def check_rounds(requested):
    """``requested`` if it is ``"auto"`` or a number of rounds >= 0, else a ValueError."""
    if requested != "auto" and (isinstance(requested, bool) or not isinstance(requested, int) or requested < 0):
        raise ValueError(f"self_training must be 'auto' or a number of rounds >= 0, got {requested!r}")
    return requested


def plan_rounds(requested="auto", *, epochs: int | None = None, training_s: float | None = None,
                step_s: float | None = None, round_extra_s: float = 0.0, steps_per_epoch: int = 4,
                margin: float = MARGIN) -> SelfTrainingPlan:
    """How many student rounds fit, and each round's share.

    Parameters
    ----------
    requested : "auto" or int
        ``"auto"``: up to :data:`MAX_ROUNDS`, as the budget allows; an int: that many.
    epochs : int, optional
        The user's fixed epochs: round 0 gets ``ceil(epochs / 2)``, the students share the rest
        (``"auto"`` plans as many rounds, up to :data:`MAX_ROUNDS`, as leaves each one epoch).
    training_s, step_s : float, optional
        With a time budget: the seconds left for training and one optimiser step's seconds.
    round_extra_s : float
        Seconds each student round spends outside optimiser steps (re-labelling, validation).
    steps_per_epoch : int
        Steps of one epoch, for the minimum round.

    >>> plan_rounds(epochs=4).epochs
    [2, 1, 1]
    >>> plan_rounds(training_s=100, step_s=1.0).rounds  # 25 s a student, 12 s needed
    2
    >>> plan_rounds(training_s=20, step_s=1.0).rounds
    0
    """
    check_rounds(requested)
    if epochs is not None:
        first = math.ceil(epochs / 2)
        n = min(MAX_ROUNDS, epochs - first) if requested == "auto" else requested
        if n == 0:
            return SelfTrainingPlan(0, reason=f"{epochs} epoch(s) leave none to a student" if requested == "auto"
                                    else "self_training=0")
        rest = max(epochs - first, n)
        per = [rest // n + (1 if i < rest % n else 0) for i in range(n)]
        return SelfTrainingPlan(n, epochs=[first, *per], margin=margin,
                                reason="planned from the epochs" if requested == "auto" else "requested")
    if requested != "auto":
        n, reason = requested, "requested" if requested else "self_training=0"
    else:
        smallest = MIN_ROUND_EPOCHS * steps_per_epoch * (step_s or 0.0) + round_extra_s
        student_s = (1 - FIRST_SHARE) * (training_s or 0.0)
        n = next((k for k in range(MAX_ROUNDS, 0, -1) if student_s / k >= smallest), 0)
        reason = (f"each student round gets {student_s / max(n, 1):.0f} s" if n else
                  f"a student round needs {smallest:.0f} s; the budget leaves {student_s:.0f} s")
    if not n:
        return SelfTrainingPlan(0, margin=margin, reason=reason)
    return SelfTrainingPlan(n, shares=[FIRST_SHARE] + [round((1 - FIRST_SHARE) / n, 4)] * n, margin=margin,
                            reason=reason)


def student_augmentation(augmentation):
    """The student's noise: the teacher's geometric augmentation (or the 8 dihedral transforms)
    with shot and Gaussian noise, brightness and contrast, and illumination each on
    :data:`STUDENT_NOISE` of the patches; no blur, which erases the edges of 5 px particles
    (``benchmarks/README.md``, the tiny-particle ablations).

    >>> aug = student_augmentation(None)
    >>> aug.p, aug.dihedral, aug.blur_sigma
    (0.3, True, (0.0, 0.0))
    """
    from ..data.augment import Augmentation

    base = augmentation if augmentation is not None else Augmentation(rotate_degrees=0.0)
    return replace(base, dihedral=True, p=max(base.p, STUDENT_NOISE), blur_sigma=(0.0, 0.0))


@dataclass
class SelfTraining:
    """The rounds of one run: the labels of the images that are re-labelled and the record.

    ``train_masks`` and ``val_masks`` are the lists the training reads (changed in place);
    ``relabel_train`` / ``relabel_val`` the indices re-labelled each round.
    """

    plan: SelfTrainingPlan
    train_masks: list
    relabel_train: list
    val_masks: list
    relabel_val: list
    records: list = field(default_factory=list)

    def first_record(self, edge_px, seconds: float, epochs: int, val_dice: float) -> dict:
        """The record of round 0 (the labeller's pseudo-labels, edges ignored)."""
        rows = [label_agreement(self.train_masks[i], self.train_masks[i]) for i in self.relabel_train]
        pooled = _pooled(rows, [self.train_masks[i].size for i in self.relabel_train])
        record = {"round": 0, "labels": f"labeller's pseudo-labels, {edge_px} px at their edges ignored",
                  "confident": pooled["confident"], "particles": pooled["particles"], "agreement_dice": None,
                  "epochs": int(epochs), "seconds": round(float(seconds), 1), "val_dice": _round(val_dice)}
        self.records.append(record)
        return record

    def relabel(self, predict, threshold: float = 0.5) -> dict:
        """New labels from ``predict(indices, split) -> particle probabilities``: confident pixels
        of the training images, the validation images' labels at ``threshold`` (zero-mask runs);
        returns the agreement of the new training labels with the previous ones."""
        rows, sizes = [], []
        for i, p in zip(self.relabel_train, predict(self.relabel_train, "train")):
            new = confident_labels(p, threshold, self.plan.margin)
            rows.append(label_agreement(new, self.train_masks[i]))
            sizes.append(new.size)
            self.train_masks[i] = new
        for i, p in zip(self.relabel_val, predict(self.relabel_val, "val")):
            self.val_masks[i] = (p >= threshold).astype(np.uint8)
        return _pooled(rows, sizes)

    def add_record(self, index: int, agreement: dict, seconds: float, epochs: int, val_dice: float) -> dict:
        record = {"round": index, "labels": f"round {index - 1}'s confident predictions",
                  "confident": agreement["confident"], "particles": agreement["particles"],
                  "agreement_dice": agreement["dice"], "epochs": int(epochs), "seconds": round(float(seconds), 1),
                  "val_dice": _round(val_dice)}
        self.records.append(record)
        return record

    def write(self, run_dir: Path, kept: int | None = None, judge: str | None = None) -> dict:
        """``selftrain.json``: the plan, the rounds so far and the round whose model the run keeps
        (``kept_round`` None while the rounds run)."""
        out = {"plan": self.plan.to_dict(), "rounds": self.records, "kept_round": kept, "kept_by": judge}
        (Path(run_dir) / RECORD_FILE).write_text(json.dumps(out, indent=2))
        return out


def finished_rounds(run_dir: Path, plan: SelfTrainingPlan) -> list[dict]:
    """The records of the rounds an interrupted run finished: those in its ``selftrain.json``,
    written by the same plan, whose ``rounds/round<k>.keras`` exists (from round 0 on, in order).

    >>> finished_rounds(Path("no-such-run"), SelfTrainingPlan(2))
    []
    """
    try:
        stored = json.loads((Path(run_dir) / RECORD_FILE).read_text())
    except (OSError, ValueError):  # none, or cut short by the kill: the rounds start again
        return []
    if stored.get("kept_round") is not None or stored.get("plan") != plan.to_dict():
        return []
    done = []
    for index, record in enumerate(stored.get("rounds", [])):
        if record.get("round") != index or not (Path(run_dir) / "rounds" / f"round{index}.keras").is_file():
            break
        done.append(record)
    return done[:plan.rounds]  # the last round always runs: it leaves last.keras


def _replay(state: SelfTraining, done: list[dict], net, out_dir: Path, predict, verbose: int) -> int:
    """Bring ``state`` and ``net`` to the end of the finished rounds ``done``: each student's labels
    are made again from its teacher's saved weights; returns the first round to train."""
    for index, record in enumerate(done):
        if index:
            state.relabel(predict)
        net.load_weights(Path(out_dir) / "rounds" / f"round{index}.keras")
        state.records.append(record)
    history = Path(out_dir) / "history.csv"
    if done and history.is_file():  # the epochs of the round cut short are trained again
        import pandas as pd

        rows = pd.read_csv(history)
        rows[rows["round"] < len(done)].to_csv(history, index=False)
    if done and verbose:
        print(f"self-training: resuming after round {len(done) - 1} (its weights and records are in "
              f"{Path(out_dir) / 'rounds'})", flush=True)
    return len(done)


def _round(value):
    return None if value is None or not math.isfinite(value) else round(float(value), 4)


def round_line(record: dict) -> str:
    """One printed line per round."""
    agreement = (f", dice {record['agreement_dice']:.3f} with the previous labels"
                 if record["agreement_dice"] is not None else "")
    val = f", val dice {record['val_dice']:.3f}" if record["val_dice"] is not None else ""
    return (f"round {record['round']}: {record['labels']}: {100 * record['confident']:.1f} % of pixels labelled"
            f"{agreement}; {record['epochs']} epochs in {record['seconds']:.0f} s{val}")


def run_rounds(plan: SelfTrainingPlan, inputs, fit_round, predict, net, out_dir: Path, val, training_plan,
               augmentation, deadline, reserve: float, *, monitored_seed: int = 0,
               chief: bool = True, verbose: int = 1, resumed: bool = False) -> dict:
    """Round 0 and the student rounds of one run (the body of ``fit`` when self-training).

    ``fit_round(index, masks, epochs, deadline, reserve, augmentation, checkpoint, monitored,
    rate_share)`` trains one round and returns ``(epochs run, best monitored validation dice)``;
    ``predict(indices, split)`` gives the particle probabilities of those images of ``"train"`` or
    ``"val"``. Leaves ``best.keras`` (the kept round) and ``last.keras`` in ``out_dir``. A
    ``resumed`` run skips the rounds it finished (:func:`finished_rounds`).
    """
    import shutil
    import time

    from .plan import MAX_MONITORED

    train_stems, pseudo = inputs.split["train"], set(inputs.pseudo)
    state = SelfTraining(plan, inputs.read["train"][1], [i for i, s in enumerate(train_stems) if s in pseudo],
                         val.masks, [] if inputs.hand else list(range(len(val))))
    (out_dir / "rounds").mkdir(exist_ok=True)
    first = _replay(state, finished_rounds(out_dir, plan) if resumed else [], net, out_dir, predict, verbose)
    begin = time.monotonic()
    training_s = (deadline - reserve - begin) if deadline is not None else None
    ends = None
    if training_s is not None and plan.shares:  # the rounds left share what is left
        left = np.asarray(plan.shares[first:], float)
        ends = [None] * first + (np.cumsum(left / left.sum()) * training_s + begin).tolist()
    epochs_total = training_plan.epochs
    for index in range(first, plan.rounds + 1):
        last = index == plan.rounds
        round_start = time.monotonic()
        if index:
            agreement = state.relabel(predict)
        epochs = (plan.epochs[index] if plan.epochs else
                  max(1, int(round((epochs_total or 1) * plan.shares[index]))))
        round_deadline = deadline if last or ends is None else ends[index]
        monitored = val.subset(training_plan.monitored_images or MAX_MONITORED, seed=monitored_seed)
        checkpoint = out_dir / "rounds" / f"round{index}.keras"
        ran, best = fit_round(index, state.train_masks, epochs, round_deadline, reserve if last else 0.0,
                              augmentation if index == 0 else student_augmentation(augmentation), checkpoint,
                              monitored, plan.student_rate if index else 1.0)
        if last:
            net.save(out_dir / "last.keras")
        if checkpoint.is_file():  # the round's best epoch teaches the next round
            net.load_weights(checkpoint)
        else:
            net.save(checkpoint)
        seconds = time.monotonic() - round_start
        record = (state.first_record(inputs.edge_px, seconds, ran, best) if index == 0
                  else state.add_record(index, agreement, seconds, ran, best))
        if chief and not last:
            state.write(out_dir)
        if verbose:
            print(round_line(record), flush=True)
    if inputs.hand:  # hand-drawn masks judge the rounds
        dice = [r["val_dice"] if r["val_dice"] is not None else -1.0 for r in state.records]
        kept, judge = int(np.argmax(dice)), "best validation dice on hand-drawn masks"
    else:
        kept, judge = plan.rounds, "last round (no hand-drawn mask to judge the rounds)"
    shutil.copyfile(out_dir / "rounds" / f"round{kept}.keras", out_dir / "best.keras")
    record = state.write(out_dir, kept, judge) if chief else None
    if verbose:
        print(f"self-training: kept round {kept} ({judge})", flush=True)
    return record
