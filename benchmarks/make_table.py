"""Tables and target checks from a ``run_all.py`` results JSON.

``python benchmarks/make_table.py benchmarks/results/full.json`` prints the plain-text tables and
the targets; ``--markdown [OUT]`` writes the performance table of docs/performance.md (default
``benchmarks/results/TABLE.md``); ``--compare REF.json`` prints new/reference ratios.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

MP_1024 = 1024 * 1024 / 1e6
PRECISIONS = ("float32", "bfloat16")


def _rows(results, **where):
    rows = results.get("sections", {}).get("predict", [])
    return [r for r in rows if all(r.get(k) == v for k, v in where.items())]


def _best(rows, key="mpx_per_s"):
    return max(rows, key=lambda r: r[key]) if rows else None


def _isa(machine) -> str:
    """The CPU's vector instructions that matter here, e.g. "AVX-512 + BF16" or "AVX2"."""
    if machine.get("amx_bf16"):
        return "AVX-512 + AMX"
    if machine.get("avx512f"):
        return "AVX-512 + BF16" if machine.get("avx512_bf16") else "AVX-512"
    if "avx2" not in machine:            # results from before the flag was recorded
        return "no AVX-512"
    return "AVX2" if machine["avx2"] else "no AVX2"


def _kernels(row) -> str:
    return {True: "oneDNN", False: "Eigen"}.get(row.get("onednn"), "—")


def kernels_used(results) -> str:
    """Which TensorFlow CPU kernels each architecture ran with, e.g. "oneDNN: a, b; Eigen: c"."""
    rows = _rows(results, framework="tem_keras") + results.get("sections", {}).get("train", {}).get("train", [])
    by = {}
    for r in rows:
        by.setdefault(_kernels(r), set()).add(r["arch"])
    return "; ".join(f"{k}: {', '.join(f'`{a}`' for a in sorted(v))}" for k, v in sorted(by.items()) if k != "—")


def _matmul(results, precision, framework="tensorflow"):
    try:
        return results["sections"]["matmul"][framework][precision]["gflop_per_s"]
    except (KeyError, TypeError):
        return None


def predict_table(results) -> list[dict]:
    """One line per (arch, precision, size, batch) of the bare model call, with the peer beside it."""
    lines = []
    for r in _rows(results, framework="tem_keras", case="bare"):
        peer = _rows(results, framework="torch", arch=r["arch"], precision=r["precision"],
                     size=r["size"], batch=r["batch"])
        rate = _matmul(results, r["precision"])
        lines.append({
            "arch": r["arch"], "precision": r["precision"], "size": r["size"], "batch": r["batch"],
            "s_per_call": r["median_s"], "mpx_per_s": r["mpx_per_s"], "images_per_s": r["images_per_s"],
            "gflop_per_s": r["gflop_per_s"], "matmul_fraction": r["gflop_per_s"] / rate if rate else None,
            "torch_s": peer[0]["median_s"] if peer else None,
            "ratio_vs_torch": peer[0]["median_s"] / r["median_s"] if peer else None,
            "runs": r["runs"], "load": r["load"][0], "kernels": _kernels(r)})
    return lines


def user_table(results) -> list[dict]:
    lines = []
    for r in _rows(results, framework="tem_keras"):
        if r["case"] not in ("predict", "tiled", "large"):
            continue
        bare = _rows(results, framework="tem_keras", case="bare", arch=r["arch"], precision=r["precision"],
                     size=1024, batch=r["batch"])
        line = {"arch": r["arch"], "precision": r["precision"], "case": r["case"], "size": r["size"],
                "batch": r["batch"], "s_per_call": r["median_s"], "mpx_per_s": r["mpx_per_s"],
                "images_per_s": r["images_per_s"], "runs": r["runs"], "load": r["load"][0]}
        if r["case"] == "predict" and bare:
            line["overhead"] = r["median_s"] / bare[0]["median_s"] - 1
        if r["case"] in ("tiled", "large"):
            line["rss_peak_mb"] = r.get("rss_peak_mb")
            calls = r.get("calls") or []
            line["calls"] = ("whole" if len(calls) == 1 and calls[0][0] == 1 else
                             f"{len(calls)} calls of {calls[0][0]}×{calls[0][1]}²" if calls else None)
            one = _rows(results, framework="tem_keras", case="predict", arch=r["arch"],
                        precision=r["precision"], size=1024, batch=1)
            if one:
                line["time_per_pixel_vs_1024"] = one[0]["mpx_per_s"] / r["mpx_per_s"]
        lines.append(line)
    return lines


def targets(results) -> list[tuple[str, str, str]]:
    """(target, measured, met) triples."""
    out = []

    def add(name, value, ok):
        out.append((name, value, "met" if ok else "NOT met"))

    for precision in ("float32", "bfloat16"):
        r = _rows(results, framework="tem_keras", case="bare", arch="unet64", precision=precision, size=1024, batch=1)
        rate = _matmul(results, precision)
        if r and rate:
            f = r[0]["gflop_per_s"] / rate
            try:  # the load before the section: during it, the benchmark's own threads add ~2
                loaded = results["section_load"]["matmul"]["before"] > 0.5
            except (KeyError, TypeError):
                loaded = False
            out.append((f"UNet-64 ≥ 85 % of matmul rate ({precision}, 1024²)",
                        f"{r[0]['gflop_per_s']:.0f} / {rate:.0f} GFLOP/s = {f:.0%}",
                        "INVALID (matmul rate taken under load)" if loaded else "met" if f >= 0.85 else "NOT met"))
    for line in user_table(results):
        if line["case"] == "predict" and line["batch"] == 1 and "overhead" in line and line["arch"] == "unet64":
            add(f"predict overhead ≤ 10 % ({line['arch']}, {line['precision']}, 1024²)",
                f"{line['overhead']:+.1%}", line["overhead"] <= 0.10)
        how = {"tiled": "tiled 4096² (1024 px tiles)", "large": "4096² with predict's defaults"}.get(line["case"])
        detail = f", {line['calls']}" if line.get("calls") else ""
        if how and "time_per_pixel_vs_1024" in line:
            add(f"{how} time/pixel ≤ 1.3× 1024² ({line['arch']}, {line['precision']}{detail})",
                f"{line['time_per_pixel_vs_1024']:.2f}×", line["time_per_pixel_vs_1024"] <= 1.3)
        if how and line.get("rss_peak_mb"):
            add(f"{how} peak memory ≤ 3 GB ({line['arch']}, {line['precision']})",
                f"{line['rss_peak_mb'] / 1024:.2f} GB", line["rss_peak_mb"] <= 3072)
    # small residual UNet frame rate (predict, best batch)
    for arch in ("residual_unet_sytwu", "residual_unet_2b_p2"):
        for precision in ("float32", "bfloat16"):
            p = _best(_rows(results, framework="tem_keras", case="predict", arch=arch, precision=precision, size=1024))
            t = _best(_rows(results, framework="torch", arch=arch, precision=precision, size=1024))
            if p:
                add(f"{arch} ≥ 17 frames/s at 1024² ({precision}, predict, batch {p['batch']})",
                    f"{p['images_per_s']:.1f} frames/s", p["images_per_s"] >= 17)
            if p and t:
                add(f"{arch} predict ≥ PyTorch peer's best ({precision}, 1024²)",
                    f"{p['images_per_s']:.1f} vs {t['images_per_s']:.1f} frames/s "
                    f"(×{p['images_per_s'] / t['images_per_s']:.2f})", p["images_per_s"] >= t["images_per_s"])
    # mixed precision speed-up, bare call, 1024², best batch
    archs = sorted({r["arch"] for r in _rows(results, framework="tem_keras", case="bare")})
    if "bfloat16" not in results.get("precisions", PRECISIONS):
        out.append(("bfloat16 ≥ 1.6× float32 on CPUs with bfloat16 support",
                    f"not measured: this CPU ({_isa(results.get('machine', {}))}) has no bfloat16 "
                    "instructions", "n/a"))
    fp32_rate, bf16_rate = _matmul(results, "float32"), _matmul(results, "bfloat16")
    ceiling = (f"; this CPU's bfloat16 matmul rate is ×{bf16_rate / fp32_rate:.2f} its float32 rate"
               if fp32_rate and bf16_rate else "")
    for arch in archs:
        f = _best(_rows(results, framework="tem_keras", case="bare", arch=arch, precision="float32", size=1024))
        b = _best(_rows(results, framework="tem_keras", case="bare", arch=arch, precision="bfloat16", size=1024))
        if f and b:
            s = b["mpx_per_s"] / f["mpx_per_s"]
            add(f"bfloat16 ≥ 1.6× float32 ({arch}, 1024², best batch)", f"×{s:.2f}{ceiling}", s >= 1.6)
        for precision in ("float32", "bfloat16"):
            k = _best(_rows(results, framework="tem_keras", case="bare", arch=arch, precision=precision, size=1024))
            t = _best(_rows(results, framework="torch", arch=arch, precision=precision, size=1024))
            if k and t:
                ratio = k["mpx_per_s"] / t["mpx_per_s"]
                add(f"tem_keras / PyTorch ≥ 1.0 ({arch}, {precision}, 1024², best batch each)",
                    f"×{ratio:.2f}", ratio >= 1.0)
    base = results.get("sections", {}).get("baselines", {})
    if "timings" in base:
        ours = base["timings"]["pseudo_labels (ours, 256 levels)"]["median_s"]
        ref = base["timings"]["pseudo_labels (reference, scikit-image)"]["median_s"]
        dice = base["dice_pseudo_labels_vs_reference"]["256_levels"]
        add("pseudo_labels ≤ 0.4 s per 1792×1920 image", f"{ours:.3f} s", ours <= 0.4)
        add("pseudo_labels ≥ 10× the reference (here: straightforward scikit-image)",
            f"×{ref / ours:.1f} ({ref:.2f} s / {ours:.2f} s)", ref / ours >= 10)
        add("pseudo_labels dice ≥ 0.99 vs reference", f"{dice:.4f}", dice >= 0.99)
    return out


def _fmt(v, spec):
    return "—" if v is None else format(v, spec)


def print_tables(results) -> None:
    m = results.get("machine", {})
    print(f"\n{m.get('cpu')} — {m.get('logical_cpus')} logical CPUs, {_isa(m)}, "
          f"TF {m.get('tensorflow')}, Keras {m.get('keras')}, torch {m.get('torch')}; "
          f"load at start {results.get('load_at_start')}, at end {results.get('load_at_end')}")
    if kernels_used(results):
        print(f"TensorFlow CPU kernels: {kernels_used(results)}".replace("`", ""))
    mm = results.get("sections", {}).get("matmul")
    if mm:
        print("\nmatmul 4096² GFLOP/s: " + ", ".join(
            f"{fw} {p} {_fmt(v.get('gflop_per_s'), '.0f')} (load {v.get('load', ['?'])[0]})"
            for fw, d in mm.items() if isinstance(d, dict) and "error" not in d for p, v in d.items()))
    lines = predict_table(results)
    if lines:
        print("\nmodel call alone (tem_keras traced function vs PyTorch channels_last, tuned malloc)")
        print(f"{'arch':22} {'prec':9} {'size':>5} {'B':>3} {'s/call':>8} {'MP/s':>7} {'img/s':>7} "
              f"{'GFLOP/s':>8} {'of mm':>6} {'torch s':>8} {'×torch':>7} {'load':>5}")
        for l in lines:
            print(f"{l['arch']:22} {l['precision']:9} {l['size']:5d} {l['batch']:3d} {l['s_per_call']:8.3f} "
                  f"{l['mpx_per_s']:7.2f} {l['images_per_s']:7.2f} {l['gflop_per_s']:8.1f} "
                  f"{_fmt(l['matmul_fraction'], '6.0%')} {_fmt(l['torch_s'], '8.3f')} "
                  f"{_fmt(l['ratio_vs_torch'], '7.2f')} {l['load']:5.2f}")
    lines = user_table(results)
    if lines:
        print("\ntem_keras.predict (standardisation only; tiled = 4096² image, 1024 px tiles, batch 4)")
        print(f"{'arch':22} {'prec':9} {'case':8} {'size':>5} {'B':>3} {'s/call':>8} {'MP/s':>7} {'img/s':>7} "
              f"{'overhead':>9} {'px-time/1024':>12} {'peak RSS':>9} {'load':>5}")
        for l in lines:
            print(f"{l['arch']:22} {l['precision']:9} {l['case']:8} {l['size']:5d} {l['batch']:3d} "
                  f"{l['s_per_call']:8.3f} {l['mpx_per_s']:7.2f} {l['images_per_s']:7.2f} "
                  f"{_fmt(l.get('overhead'), '+9.1%')} {_fmt(l.get('time_per_pixel_vs_1024'), '12.2f')} "
                  f"{_fmt(l.get('rss_peak_mb'), '7.0f')}MB {l['load']:5.2f}")
    tr = results.get("sections", {}).get("train")
    if tr:
        print("\ntraining, 512² patches, float32 (batch per replica)")
        print(f"{'arch':22} {'B':>3} {'replicas':>8} {'s/step':>8} {'patches/s':>10} {'load':>5}")
        for r in tr["train"]:
            print(f"{r['arch']:22} {r['batch']:3d} {r['replicas']:8d} {r['step_s']:8.3f} "
                  f"{r['patches_per_s']:10.2f} {r['load'][0]:5.2f}")
        p = tr["pipeline"]
        print(f"input pipeline (training_data(...).pipelines['train'], augmentation on): "
              f"{p['patches_per_s']:.1f} patches/s, batch {p['batch']} (load {p['load'][0]:.2f})")
    base = results.get("sections", {}).get("baselines", {})
    if "timings" in base:
        print(f"\nbaselines per {base['shape'][0]}×{base['shape'][1]} image ({base['image']}):")
        for k, v in base["timings"].items():
            print(f"  {k:42} {v['median_s']:.3f} s (median of {v['runs']})")
    print("\ntargets")
    for name, value, ok in targets(results):
        print(f"  [{ok:7}] {name}: {value}")


def markdown(results) -> str:
    m = results.get("machine", {})
    out = [f"Measured by `python benchmarks/run_all.py` on {results.get('started')}: {m.get('cpu')}, "
           f"{m.get('logical_cpus')} logical CPUs ({_isa(m)}), "
           f"{m.get('memory_gb')} GB; TensorFlow {m.get('tensorflow')}, Keras {m.get('keras')}, "
           f"PyTorch {m.get('torch')} (peer). 1-minute load average at start "
           f"{results.get('load_at_start', ['?'])[0]}, at end {results.get('load_at_end', ['?'])[0]}. "
           f"Medians of up to {results.get('runs')} calls after a warm-up."]
    for rerun in results.get("reruns", []):
        out.append(f"Rows of {', '.join(f'`{a}`' for a in rerun['archs'])} were measured again at "
                   f"{rerun['started']} ({rerun['reason']}).")
    if kernels_used(results):
        out.append(f"TensorFlow's CPU kernels, as the `tem-keras` command picks them: {kernels_used(results)}.")
    out.append("")
    mm = results.get("sections", {}).get("matmul", {})
    if mm:
        kernels = _kernels(mm.get("tensorflow", {}).get("float32", {}))
        out.append(f"Matrix multiply 4096² (TensorFlow{', ' + kernels if kernels != '—' else ''}): "
                   f"{_fmt(_matmul(results, 'float32'), '.0f')} GFLOP/s float32, "
                   f"{_fmt(_matmul(results, 'bfloat16'), '.0f')} GFLOP/s bfloat16.")
        out.append("")
    out += ["| model | precision | image | batch | images/s | MP/s | GFLOP/s | of matmul rate | PyTorch images/s | tem_keras / PyTorch |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for l in predict_table(results):
        torch_ips = l["batch"] / l["torch_s"] if l["torch_s"] else None
        out.append(f"| `{l['arch']}` | {l['precision']} | {l['size']}² | {l['batch']} | {l['images_per_s']:.2f} | "
                   f"{l['mpx_per_s']:.2f} | {l['gflop_per_s']:.0f} | {_fmt(l['matmul_fraction'], '.0%')} | "
                   f"{_fmt(torch_ips, '.2f')} | {_fmt(l['ratio_vs_torch'], '.2f')} |")
    out += ["", "`tem_keras.predict` (whole pipeline; 4096²: one image, in 1024 px tiles or with predict's "
            "defaults: whole when its activations fit the memory budget):", "",
            "| model | precision | case | batch | seconds | MP/s | overhead vs model call | peak RSS |",
            "|---|---|---|---:|---:|---:|---:|---:|"]
    for l in user_table(results):
        case = {"predict": "1024² image(s)", "tiled": "4096², 1024 px tiles"}.get(
            l["case"], f"4096², defaults ({l.get('calls')})")
        out.append(f"| `{l['arch']}` | {l['precision']} | {case} | {l['batch']} | {l['s_per_call']:.2f} | "
                   f"{l['mpx_per_s']:.2f} | {_fmt(l.get('overhead'), '+.0%')} | "
                   f"{_fmt(l.get('rss_peak_mb') and l['rss_peak_mb'] / 1024, '.2f')}{' GB' if l.get('rss_peak_mb') else ''} |")
    tr = results.get("sections", {}).get("train")
    if tr:
        out += ["", "Training (512² patches, float32, batch per replica; 2 replicas = 2 logical CPU devices):", "",
                "| model | batch | replicas | patches/s |", "|---|---:|---:|---:|"]
        for r in tr["train"]:
            out.append(f"| `{r['arch']}` | {r['batch']} | {r['replicas']} | {r['patches_per_s']:.2f} |")
        out.append(f"\nInput pipeline: {tr['pipeline']['patches_per_s']:.0f} patches/s (augmentation on).")
    base = results.get("sections", {}).get("baselines", {})
    if "timings" in base:
        out += ["", f"Classical baselines per {base['shape'][0]}×{base['shape'][1]} image: " + "; ".join(
            f"{k} {v['median_s']:.2f} s" for k, v in base["timings"].items()) + "."]
    checks = targets(results)
    if checks:
        out += ["", "Targets of the performance issue, as measured in this run:", "",
                "| target | measured | |", "|---|---|---|"]
        out += [f"| {name} | {value} | {ok} |" for name, value, ok in checks]
    return "\n".join(out) + "\n"


def compare(new, ref) -> None:
    print(f"\nratios against {ref.get('name')} ({ref.get('started')}): > 1 = faster now")
    old = {(l["arch"], l["precision"], l["size"], l["batch"]): l for l in predict_table(ref)}
    for l in predict_table(new):
        o = old.get((l["arch"], l["precision"], l["size"], l["batch"]))
        if o:
            print(f"  {l['arch']:22} {l['precision']:9} {l['size']:5d} B{l['batch']:<3d} model call "
                  f"×{l['mpx_per_s'] / o['mpx_per_s']:.2f}")
    old = {(l["arch"], l["precision"], l["case"], l["batch"]): l for l in user_table(ref)}
    for l in user_table(new):
        o = old.get((l["arch"], l["precision"], l["case"], l["batch"]))
        if o:
            print(f"  {l['arch']:22} {l['precision']:9} {l['case']:8} B{l['batch']:<3d} "
                  f"×{l['mpx_per_s'] / o['mpx_per_s']:.2f}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", type=Path)
    parser.add_argument("--markdown", nargs="?", const=Path(__file__).parent / "results" / "TABLE.md", type=Path)
    parser.add_argument("--compare", type=Path)
    args = parser.parse_args(argv)
    results = json.loads(args.results.read_text())
    print_tables(results)
    if args.compare:
        compare(results, json.loads(args.compare.read_text()))
    if args.markdown:
        args.markdown.write_text(markdown(results))
        print(f"\nwritten to {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
