"""The PyTorch reference peer: the same architectures as ``bench_models.py``, timed the same way.

Written in plain PyTorch (CPU wheel), in the fastest layout we found (``channels_last``, eval mode,
``torch.inference_mode``, batch norm folded into the convolutions as inference does anyway) and,
when run by ``run_all.py``, with glibc's allocator tuned (``MALLOC_MMAP_MAX_=0``,
``MALLOC_TRIM_THRESHOLD_`` large) in the subprocess environment — the strongest peer measured.
bfloat16 runs under ``torch.autocast("cpu", torch.bfloat16)``.

Architectures (same layer shapes and FLOPs as the Keras ones):
``unet64`` 4-level UNet, 64 base filters, two 3×3 conv+ReLU per level, transposed-conv up-sampling;
``unet_horwath_1024`` the same with 16 filters and one conv per level; ``residual_unet_sytwu`` and
``residual_unet_2b_p2`` the 2-block residual UNet of Sytwu et al. (4→8→16 filters, pools 4 or 2).

Install a CPU build of PyTorch only (a CUDA build is several GB and not needed), e.g. from
PyTorch's CPU package index; PyTorch is never a dependency of tem_keras.

``python benchmarks/torch_peer.py --worker ARCH PRECISION SIZE BATCH [--layout channels_last]``
prints one ``RESULT {json}`` line; ``--matmul`` the 4096² matmul rate instead.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, measure  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402


class ConvBlock(nn.Sequential):
    def __init__(self, cin, cout, n_convs):
        mods = []
        for i in range(n_convs):
            mods += [nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1), nn.ReLU(inplace=True)]
        super().__init__(*mods)


class UNet(nn.Module):
    def __init__(self, depth=4, base=64, n_convs=2, channels=1, classes=2):
        super().__init__()
        self.enc = nn.ModuleList()
        cin = channels
        for level in range(depth):
            self.enc.append(ConvBlock(cin, base * 2**level, n_convs))
            cin = base * 2**level
        self.bottleneck = ConvBlock(cin, base * 2**depth, n_convs)
        cin = base * 2**depth
        self.up, self.dec = nn.ModuleList(), nn.ModuleList()
        for level in reversed(range(depth)):
            f = base * 2**level
            self.up.append(nn.ConvTranspose2d(cin, f, 2, stride=2))
            self.dec.append(ConvBlock(2 * f, f, n_convs))
            cin = f
        self.head = nn.Conv2d(cin, classes, 1)

    def forward(self, x):
        skips = []
        for block in self.enc:
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, 2)
        x = self.bottleneck(x)
        for up, dec, skip in zip(self.up, self.dec, reversed(skips)):
            x = dec(torch.cat([up(x), skip], 1))
        return torch.softmax(self.head(x), 1)


class ResidualBlock(nn.Module):
    """conv3×3 → BN → ReLU → conv3×3 → BN, + 1×1 projection, ReLU (BN folded: eval mode)."""

    def __init__(self, cin, cout):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)   # BN folded into bias
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.projection = nn.Conv2d(cin, cout, 1)

    def forward(self, x):
        y = F.relu(self.conv1(x), inplace=True)
        return F.relu(self.conv2(y) + self.projection(x), inplace=True)


class ResidualUNet(nn.Module):
    def __init__(self, n_blocks=2, base=4, pools=(4, 4), channels=1, classes=2):
        super().__init__()
        self.pools = pools
        self.enc = nn.ModuleList()
        cin = channels
        for i in range(n_blocks):
            self.enc.append(ResidualBlock(cin, base * 2**i))
            cin = base * 2**i
        self.bottleneck = ResidualBlock(cin, base * 2**n_blocks)
        cin = base * 2**n_blocks
        self.dec = nn.ModuleList()
        for i in reversed(range(n_blocks)):
            self.dec.append(ResidualBlock(cin + base * 2**i, base * 2**i))
            cin = base * 2**i
        self.head = nn.Conv2d(cin, classes, 1)

    def forward(self, x):
        skips = []
        for block, k in zip(self.enc, self.pools):
            x = block(x)
            skips.append(x)
            x = F.max_pool2d(x, k)
        x = self.bottleneck(x)
        for dec, skip, k in zip(self.dec, reversed(skips), reversed(self.pools)):
            x = dec(torch.cat([F.interpolate(x, scale_factor=k, mode="nearest"), skip], 1))
        return torch.softmax(self.head(x), 1)


ARCHS = {
    "unet64": lambda: UNet(4, 64, 2),
    "unet_horwath_1024": lambda: UNet(4, 16, 1),
    "residual_unet_sytwu": lambda: ResidualUNet(2, 4, (4, 4)),
    "residual_unet_2b_p2": lambda: ResidualUNet(2, 4, (2, 2)),
}


def worker(arch, precision, size, batch, layout, runs, budget):
    torch.manual_seed(0)
    model = ARCHS[arch]().eval()
    memory_format = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    x = torch.randn(batch, 1, size, size).to(memory_format=memory_format)

    def call():
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=precision == "bfloat16"):
            return model(x).float()

    timing = measure(call, runs=runs, budget_s=budget)
    t = timing["median_s"]
    return {"arch": arch, "precision": precision, "size": size, "batch": batch, "layout": layout,
            "torch": torch.__version__, "threads": torch.get_num_threads(), **timing,
            "mpx_per_s": batch * size * size / 1e6 / t, "images_per_s": batch / t}


def matmul(n=4096, runs=5, max_call_s=5.0):
    """n² × n² products per dtype. Where a 1024² product predicts more than ``max_call_s`` per n²
    product (PyTorch's bfloat16 on CPUs without bfloat16 instructions: minutes, one thread), the
    largest power-of-two size that fits is measured instead (``n`` in the result)."""
    import time

    out = {}
    for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        probe = torch.randn(1024, 1024).to(dtype)
        torch.mm(probe, probe)
        t0 = time.perf_counter()
        torch.mm(probe, probe)
        per_probe = time.perf_counter() - t0
        size = n
        while size > 1024 and per_probe * (size / 1024) ** 3 > max_call_s:
            size //= 2
        a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
        timing = measure(lambda: torch.mm(a, b), runs=runs, budget_s=30, warmup=2)
        out[name] = {**timing, "n": size, "gflop_per_s": 2 * size**3 / 1e9 / timing["median_s"]}
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=4, metavar=("ARCH", "PRECISION", "SIZE", "BATCH"))
    parser.add_argument("--layout", default="channels_last", choices=("channels_last", "contiguous"))
    parser.add_argument("--matmul", action="store_true")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--budget", type=float, default=60.0)
    args = parser.parse_args(argv)
    if args.matmul:
        emit(matmul(runs=args.runs))
    else:
        arch, precision, size, batch = args.worker
        emit(worker(arch, precision, int(size), int(batch), args.layout, args.runs, args.budget))
    return 0


if __name__ == "__main__":
    sys.exit(main())
