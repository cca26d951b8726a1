"""The accuracy peer: a plain PyTorch UNet trained for a wall-clock budget.

``benchmarks/accuracy.py`` trains it beside ``tem-keras fit``, on the same train/val images and
for the same wall time, and scores both on the same test images. It is a deliberately ordinary
recipe, written once and never tuned per set:

* model: UNet, 4 levels (3 poolings), 16 base filters doubling per level, two (3×3 convolution,
  batch norm, ReLU) per level, transposed-convolution up-sampling + concatenation, one output
  logit (the particle class against the rest);
* data: per-image standardisation after clipping to the 0.5–99.5 percentiles; random 256² crops
  (images smaller than that reflected up to it), a third of them centred on a foreground pixel,
  the 8 dihedral flips/rotations only;
* training: batch 8, AdamW (learning rate 1e-3, cosine decay over the wall-clock budget: the rate
  follows elapsed / budget seconds), loss BCE + soft dice of the one logit, as many threads as
  CPUs, tensors in PyTorch's faster ``channels_last`` layout on CPUs;
* checkpointing: the whole validation images are segmented every 50 steps (and at the end), the
  state of the best mean per-image dice (each validation at its best threshold) is kept; at the
  end the threshold that maximises
  that mean on the validation images (grid 0.05, 0.10, ..., 0.95) is chosen, and images are
  predicted whole (reflected to a multiple of 8) with it.

Use::

    from peer_unet import train_peer
    model = train_peer(train, val, seconds=600)     # lists of (image 2-D float, mask 2-D bool)
    mask = model.predict(image)                     # bool, same shape as image
    model.record                                    # steps, wall time, best val dice, threshold

Command line (a smoke check, or the peer of one ``accuracy.py`` row)::

    python benchmarks/peer_unet.py DATA_DIR --seconds 60
    python benchmarks/peer_unet.py DATA_DIR --split RUN/split.json --particle-class 2 \\
        --seconds 540 --out OUT        # OUT/masks/<stem>.png (test images) + OUT/record.json

Without ``--split`` the split is ``dataset.json``'s, else ``split_samples`` (0.7, 0.1, 0.2) of
tem_keras. PyTorch is a benchmark-only dependency (``pip install torch``, a CPU build).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))   # accuracy_sets, beside this file

CROP, BATCH, LR, VAL_EVERY = 256, 8, 1e-3, 50
FOREGROUND_SHARE = 1 / 3
THRESHOLDS = np.round(np.arange(0.05, 0.951, 0.05), 2)
MULTIPLE = 8                                  # 3 poolings


# --------------------------------------------------------------------------------------------
# model
# --------------------------------------------------------------------------------------------

def conv_block(cin: int, cout: int) -> nn.Sequential:
    """Two (3×3 convolution, batch norm, ReLU)."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class UNet(nn.Module):
    """UNet of ``levels`` levels (``levels - 1`` poolings) and ``base`` filters doubling per level,
    transposed-convolution up-sampling, one output logit."""

    def __init__(self, levels: int = 4, base: int = 16):
        super().__init__()
        widths = [base * 2**i for i in range(levels)]
        self.down = nn.ModuleList(conv_block(a, b) for a, b in zip([1, *widths[:-1]], widths))
        self.up = nn.ModuleList(nn.ConvTranspose2d(b, a, 2, stride=2)
                                for a, b in zip(widths[:-1], widths[1:]))
        self.merge = nn.ModuleList(conv_block(2 * a, a) for a in widths[:-1])
        self.head = nn.Conv2d(base, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        for up, merge, skip in zip(reversed(self.up), reversed(self.merge), reversed(skips[:-1])):
            x = merge(torch.cat([up(x), skip], 1))
        return self.head(x)


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------

def standardise(image) -> np.ndarray:
    """Clip to the 0.5–99.5 percentiles, then zero mean and unit standard deviation (float32)."""
    x = np.asarray(image, np.float32)
    lo, hi = np.percentile(x, (0.5, 99.5))
    x = np.clip(x, lo, hi)
    return ((x - x.mean()) / max(float(x.std()), 1e-6)).astype(np.float32)


def pad_to(array: np.ndarray, shape) -> np.ndarray:
    """``array`` reflected at its bottom and right edges up to at least ``shape``."""
    extra = [(0, max(0, s - n)) for s, n in zip(shape, array.shape)]
    return np.pad(array, extra, mode="reflect") if any(e for _, e in extra) else array


def padded_multiple(array: np.ndarray, multiple: int = MULTIPLE) -> np.ndarray:
    """``array`` reflected up to the next multiple of ``multiple`` on both axes."""
    return pad_to(array, [-(-n // multiple) * multiple for n in array.shape])


def dihedral(arrays, k: int):
    """Transform ``k`` (0..7) of the dihedral group: ``k % 4`` quarter turns, a flip if ``k >= 4``."""
    out = [np.rot90(a, k % 4) for a in arrays]
    return [np.ascontiguousarray(a[:, ::-1] if k >= 4 else a) for a in out]


class CropSampler:
    """Random ``crop``² crops of standardised images with their masks: a ``FOREGROUND_SHARE`` of
    them centred on a random foreground pixel, every crop under a random dihedral transform."""

    def __init__(self, pairs, crop: int = CROP, seed: int = 0):
        if any(np.shape(im) != np.shape(m) for im, m in pairs):
            raise ValueError("every image needs a mask of its own shape")
        self.crop = crop
        self.rng = np.random.default_rng(seed)
        self.images = [pad_to(standardise(im), (crop, crop)) for im, _ in pairs]
        self.masks = [pad_to(np.asarray(m, bool), (crop, crop)) for _, m in pairs]
        self.foreground = [np.flatnonzero(m).astype(np.int64 if m.size >= 2**31 else np.int32)
                           for m in self.masks]

    def crop_one(self):
        i = int(self.rng.integers(len(self.images)))
        image, mask, fg = self.images[i], self.masks[i], self.foreground[i]
        (h, w), c = image.shape, self.crop
        if len(fg) and self.rng.random() < FOREGROUND_SHARE:
            cy, cx = divmod(int(fg[self.rng.integers(len(fg))]), w)
            y, x = min(max(cy - c // 2, 0), h - c), min(max(cx - c // 2, 0), w - c)
        else:
            y, x = int(self.rng.integers(h - c + 1)), int(self.rng.integers(w - c + 1))
        return dihedral([image[y:y + c, x:x + c], mask[y:y + c, x:x + c].astype(np.float32)],
                        int(self.rng.integers(8)))

    def batch(self, size: int = BATCH):
        """``(images, masks)`` tensors of shape ``[size, 1, crop, crop]``."""
        crops = [self.crop_one() for _ in range(size)]
        return tuple(torch.from_numpy(np.stack([c[j] for c in crops])[:, None]) for j in (0, 1))


# --------------------------------------------------------------------------------------------
# loss and scores
# --------------------------------------------------------------------------------------------

def soft_dice(probability: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Soft dice of a batch, all pixels counted together (``eps`` smooths empty masks)."""
    inter = (probability * target).sum()
    return (2 * inter + eps) / (probability.sum() + target.sum() + eps)


def bce_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of the logits + (1 − soft dice of their sigmoid)."""
    return (F.binary_cross_entropy_with_logits(logits, target)
            + 1 - soft_dice(torch.sigmoid(logits), target))


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Hard dice of two boolean masks; 1.0 when both are empty."""
    inter, total = np.count_nonzero(pred & truth), np.count_nonzero(pred) + np.count_nonzero(truth)
    return 1.0 if total == 0 else 2 * inter / total


def best_threshold(probabilities, truths, grid=THRESHOLDS) -> tuple[float, float]:
    """The threshold of ``grid`` with the highest mean per-image dice, and that mean."""
    means = [np.mean([dice(p > t, m) for p, m in zip(probabilities, truths)]) for t in grid]
    i = int(np.argmax(means))
    return float(grid[i]), float(means[i])


# --------------------------------------------------------------------------------------------
# the trained peer
# --------------------------------------------------------------------------------------------

@dataclass
class PeerModel:
    """A trained peer: the network at its best validation state and the chosen threshold.

    Attributes
    ----------
    net : UNet
        In eval mode.
    threshold : float
        Of the foreground probability.
    record : dict
        ``steps``, ``train_s`` (the training loop, validations included), ``validation_s``,
        ``wall_s`` (everything), ``best_val_dice``
        (at the best threshold of that validation), ``best_step``, ``threshold``, ``val_dice_at_threshold``, the recipe, versions.
    """

    net: UNet
    threshold: float = 0.5
    record: dict = field(default_factory=dict)

    @torch.inference_mode()
    def probability(self, image) -> np.ndarray:
        """Foreground probability of a whole 2-D image (reflected to a multiple of 8, cropped back)."""
        x = standardise(image)
        h, w = x.shape
        batch = torch.from_numpy(padded_multiple(x).copy())[None, None]
        logits = self.net(batch.contiguous(memory_format=torch.channels_last))
        return torch.sigmoid(logits)[0, 0, :h, :w].numpy()

    def predict(self, image) -> np.ndarray:
        """Boolean mask of the particle class, same shape as ``image``."""
        return self.probability(image) > self.threshold


def _validate(model: PeerModel, val) -> list[np.ndarray]:
    model.net.eval()
    probabilities = [model.probability(im) for im, _ in val]
    model.net.train()
    return probabilities


def train_peer(train, val, seconds: float, seed: int = 0, log=None) -> PeerModel:
    """Train the peer UNet for ``seconds`` of wall-clock time.

    Parameters
    ----------
    train, val : list of (ndarray, ndarray)
        ``(image, mask)`` pairs: 2-D float images, 2-D binary masks (True / 1 = particle class).
    seconds : float
        Budget of the training loop; the learning rate decays on a cosine of elapsed / budget.
        Validations run inside it; the final threshold search comes after it.
    seed : int
        Seeds PyTorch's initialisation and the crop sampler.
    log : callable, optional
        Called with one line of text after each validation.

    Returns
    -------
    PeerModel
        At the state of the best mean per-image validation dice (each validation at its best
        threshold), with the threshold chosen on the validation images.
    """
    start = time.perf_counter()
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(seed)
    if not train or not val:
        raise ValueError(f"need training and validation images, got {len(train)} and {len(val)}")
    val = [(np.asarray(im, np.float32), np.asarray(m, bool)) for im, m in val]
    sampler = CropSampler(train, seed=seed)
    model = PeerModel(UNet().to(memory_format=torch.channels_last))
    optimizer = torch.optim.AdamW(model.net.parameters(), lr=LR)
    best = (-1.0, 0, copy.deepcopy(model.net.state_dict()))
    steps, validations, val_s = 0, 0, 0.0
    model.net.train()
    while True:
        elapsed = time.perf_counter() - start
        done = elapsed >= seconds
        if steps and (done or steps % VAL_EVERY == 0):
            t0 = time.perf_counter()
            # judged at its best threshold: a state whose probabilities are only shifted
            # (e.g. batch-norm statistics behind the weights early on) is not thrown away
            score = best_threshold(_validate(model, val), [m for _, m in val])[1]
            validations, val_s = validations + 1, val_s + time.perf_counter() - t0
            if score > best[0]:
                best = (score, steps, copy.deepcopy(model.net.state_dict()))
            if log:
                log(f"step {steps}, {elapsed:.0f} s: val dice {score:.4f} (best {best[0]:.4f} "
                    f"at step {best[1]})")
        if done:
            break
        for group in optimizer.param_groups:
            group["lr"] = LR * 0.5 * (1 + math.cos(math.pi * min(elapsed / seconds, 1.0)))
        images, masks = sampler.batch()
        logits = model.net(images.contiguous(memory_format=torch.channels_last))
        loss = bce_dice_loss(logits, masks)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        steps += 1
    train_s = time.perf_counter() - start
    model.net.load_state_dict(best[2])
    model.net.eval()
    probabilities = [model.probability(im) for im, _ in val]
    model.threshold, at_threshold = best_threshold(probabilities, [m for _, m in val])
    model.record = {
        "steps": steps, "train_s": round(train_s, 1), "budget_s": round(float(seconds), 1),
        "wall_s": round(time.perf_counter() - start, 1), "validations": validations,
        "validation_s": round(val_s, 1),
        "best_val_dice": round(best[0], 5), "best_step": best[1],
        "threshold": model.threshold, "val_dice_at_threshold": round(at_threshold, 5),
        "n_train": len(train), "n_val": len(val), "seed": seed,
        "recipe": f"UNet 4 levels, 16 filters, BN+ReLU, crops {CROP}² (1/3 on foreground), "
                  f"batch {BATCH}, AdamW {LR:g} cosine over the wall-clock budget, BCE + soft dice",
        "torch": torch.__version__, "threads": torch.get_num_threads()}
    return model


def check() -> None:
    """Known answers: dice and soft dice of a mask against itself are 1 and against its
    complement 0 (hard) / ~0 (soft); the loss of a confident right answer is ~0; the crops,
    padding and the network keep shapes and alignment."""
    rng = np.random.default_rng(0)
    m = rng.random((40, 50)) < 0.3
    assert dice(m, m) == 1.0 and dice(~m, m) == 0.0 and dice(m & False, m & False) == 1.0
    t = torch.from_numpy(m.astype(np.float32))
    assert abs(float(soft_dice(t, t)) - 1.0) < 1e-6 and float(soft_dice(1 - t, t)) < 1e-3
    assert float(bce_dice_loss(40 * (2 * t - 1), t)) < 1e-6
    assert best_threshold([np.where(m, 0.7, 0.2)], [m]) == (0.2, 1.0)
    x = np.arange(6 * 10, dtype=np.float32).reshape(6, 10)
    assert padded_multiple(x).shape == (8, 16) and np.array_equal(padded_multiple(x)[:6, :10], x)
    for k in range(8):                        # a transform moves image and mask together
        a, b = dihedral([x, x], k)
        assert np.array_equal(a, b) and sorted(a.ravel()) == sorted(x.ravel())
    sampler = CropSampler([(rng.random((300, 200)), m.repeat(8, 0).repeat(4, 1)[:300, :200])],
                          crop=64)
    images, masks = sampler.batch(3)
    assert images.shape == masks.shape == (3, 1, 64, 64)
    model = PeerModel(UNet(base=4).eval())
    assert model.predict(rng.random((37, 45))).shape == (37, 45)


# --------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------

def load_pairs(data_dir, stems, particle_class: int = 1, samples=None):
    """``[(image, mask == particle_class)]`` of the given stems of a dataset folder."""
    from accuracy_sets import read_gray
    from tem_keras.data.datasets import discover, read_mask

    samples = samples or {s.stem: s for s in discover(data_dir)}
    return [(read_gray(samples[s].image), read_mask(samples[s].mask) == particle_class)
            for s in stems]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data_dir", help="dataset folder (tem_keras layout)")
    ap.add_argument("--seconds", type=float, default=60.0, help="training budget (default 60)")
    ap.add_argument("--split", default=None, help="split.json of a run (default: dataset.json's "
                    "split, else tem_keras.data.datasets.split_samples (0.7, 0.1, 0.2))")
    ap.add_argument("--particle-class", type=int, default=1, help="the class trained against the rest")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None,
                    help="write OUT/masks/<test stem>.png and OUT/record.json")
    args = ap.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from tem_keras.data.datasets import discover, split_samples
    from tem_keras.io import write_mask

    check()
    dataset = discover(args.data_dir)
    samples = {s.stem: s for s in dataset.labelled}
    if args.split:
        split = json.loads(Path(args.split).read_text())
    else:
        split = dataset.split or split_samples(sorted(samples), (0.7, 0.1, 0.2), seed=args.seed)
    pairs = {k: load_pairs(args.data_dir, split.get(k, []), args.particle_class, samples)
             for k in ("train", "val", "test")}
    print(f"peer: {len(pairs['train'])} train, {len(pairs['val'])} val, {len(pairs['test'])} test "
          f"images; {args.seconds:g} s; class {args.particle_class}", flush=True)
    model = train_peer(pairs["train"], pairs["val"], args.seconds, args.seed,
                       log=lambda s: print("  " + s, flush=True))
    t0 = time.perf_counter()
    masks = [model.predict(im) for im, _ in pairs["test"]]
    record = {**model.record, "predict_s": round(time.perf_counter() - t0, 1),
              "test_dice": {s: dice(p, m) for s, p, (_, m) in
                            zip(split.get("test", []), masks, pairs["test"])}}
    if masks:
        record["test_dice_mean"] = float(np.mean(list(record["test_dice"].values())))
    print(json.dumps({k: v for k, v in record.items() if k != "test_dice"}), flush=True)
    if args.out:
        out = Path(args.out)
        (out / "masks").mkdir(parents=True, exist_ok=True)
        for stem, mask in zip(split.get("test", []), masks):
            write_mask(out / "masks" / f"{stem}.png", mask, overwrite=True)
        (out / "record.json").write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
