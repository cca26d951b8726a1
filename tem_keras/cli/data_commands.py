"""``tem-keras`` data commands: synth, info, check, measure, label."""

from __future__ import annotations

import warnings
from pathlib import Path

from ..errors import TEMInputError
from ..io.outputs import OutputFolder, refuse_inputs
from ..validation import check_mask_contents
from .console import as_input_errors, note, note_pixel_size


def run_synth(args) -> None:
    """``tem-keras synth``: write a synthetic data set (images, masks, dataset.json)."""
    from ..data.synthetic import make_dataset

    out = make_dataset(args.out_dir, n_images=args.n_images, size=args.size, mode=args.mode,
                       pixel_size_nm=args.pixel_size_nm, seed=args.seed, overwrite=args.overwrite)
    print(f"wrote {args.n_images} {args.mode} images with masks to {out}")


def run_info(args) -> None:
    """``tem-keras info``: one line per file with frames, size, pixel size and format."""
    from ..io import read_stack

    for path in args.files:
        stack = read_stack(path)
        first = stack[0]
        size = "uncalibrated" if first.pixel_size_nm is None else f"{first.pixel_size_nm:.6g} nm/px"
        print(f"{path}: {len(stack)} frame(s) of {first.data.shape[0]}×{first.data.shape[1]} px, "
              f"{size}, {first.metadata.get('signal_type', 'image')}, "
              f"format {first.metadata.get('format', '?')}")


def run_check(args) -> None:
    """``tem-keras check``: pair images with masks and load every pair (exit 2 on problems)."""
    from ..data.datasets import discover, load_pair

    ds = discover(args.dataset_dir, pairing=args.pairing)
    print(ds)
    for p in ds.unpaired_images:
        print(f"  image without mask: {p}")
    for p in ds.unpaired_masks:
        print(f"  mask without image: {p}")
    problems = []

    def masks():
        for sample in ds.labelled:
            try:
                yield sample.mask.name, load_pair(sample, ds.num_classes)[1]
            except TEMInputError as err:
                problems.append(err)
                print(f"  problem: {err}")

    empty = check_mask_contents(masks(), args.dataset_dir)  # a set of only empty masks: refused
    print(f"{len(ds.labelled) - len(problems)} of {len(ds.labelled)} pairs are ready for training")
    if empty:
        note(empty)
    if ds.labelled and ds.pixel_size_nm is None:
        from ..io import read_image

        try:
            calibrated = read_image(ds.labelled[0].image).pixel_size_nm is not None
        except TEMInputError:
            calibrated = True  # reported above
        if not calibrated:
            note_pixel_size(ds.labelled[0].image)
    if problems:
        raise SystemExit(2)


#: ``measure`` reads label masks of any number of classes (0..254; 255 with 0/1 is refused)
_MEASURED_CLASSES = 255


def _mask_files(paths) -> list[Path]:
    from ..io import image_files

    files = []
    for path in map(Path, paths):
        if path.is_dir():
            files.extend(image_files(path))
        elif path.is_file():
            files.append(path)
        else:
            raise TEMInputError("no such file or folder", path)
    if not files:
        raise TEMInputError("no mask files found in " + ", ".join(map(str, paths)))
    return files


@as_input_errors
def run_measure(args) -> None:
    """``tem-keras measure``: particle table (sizes in nm with a pixel size) from masks."""
    import pandas as pd

    from ..data.datasets import read_mask
    from ..analysis.particles import MissingPixelSizeWarning, measure_particles

    folder = OutputFolder(args.out.parent, inputs=args.masks)
    folder.check(args.out.name, overwrite=args.overwrite)  # before the masks are read
    tables = []
    if args.pixel_size_nm is None:
        note_pixel_size("measure")
    for path in _mask_files(args.masks):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MissingPixelSizeWarning)
            table = measure_particles(read_mask(path, range(_MEASURED_CLASSES)), args.pixel_size_nm, min_area=args.min_area,
                                      split_touching=not args.no_split,
                                      exclude_border=not args.keep_border)
        table.insert(0, "mask", path.name)
        tables.append(table)
    table = pd.concat(tables, ignore_index=True)
    table.to_csv(folder.claim(args.out.name, overwrite=args.overwrite), index=False)
    column = "equivalent_diameter_nm" if args.pixel_size_nm else "equivalent_diameter_px"
    unit = "nm" if args.pixel_size_nm else "px"
    size = (f"; diameter {table[column].mean():.3g} ± {table[column].std():.2g} {unit}"
            if len(table) else "")
    print(f"{len(table)} particles in {len(tables)} mask(s){size}; table in {args.out}")


def _label_options(args) -> dict:
    """Keyword arguments of :func:`tem_keras.autolabel.label_image` from the ``label`` options."""
    given = {"--scale": args.scale, "--sigma": args.sigma, "--disk-radius": args.disk_radius}
    takes = {"auto": ("--scale",), "horwath": ("--sigma", "--disk-radius"), "otsu": ("--sigma",)}
    wrong = [name for name, value in given.items()
             if value is not None and name not in takes[args.method]]
    if wrong:
        raise TEMInputError(f"{', '.join(wrong)} do(es) not apply to --method {args.method} "
                            f"(it takes {', '.join(takes[args.method])})")
    if args.method == "auto":
        options = {"scale_px": args.scale}
    else:
        options = {"sigma": 2.0 if args.sigma is None else args.sigma}
    if args.method == "horwath":
        options["disk_radius"] = 3 if args.disk_radius is None else args.disk_radius
    from ..autolabel.labeller import check_label_options

    try:  # before any image is read
        check_label_options(args.method, particles=args.particles, **options)
    except (ValueError, TypeError) as error:
        flags = {"sigma": "--sigma", "disk_radius": "--disk-radius", "scale_px": "--scale"}
        name = str(error).split(" ", 1)[0]
        raise TEMInputError(flags.get(name, name) + str(error)[len(name):]) from None
    return options


@as_input_errors
def run_label(args) -> None:
    """``tem-keras label``: automatic particle masks for images, written as a data set folder.

    The folder may not be or hold the images labelled; files are added to it (``images/``,
    ``masks/``) and replace only files an earlier ``label`` wrote, with ``--overwrite``. One line
    per image says what the labeller chose and how confident it is (unless ``--quiet``); the
    last line gives the confidence over all images.
    """
    import numpy as np
    from tqdm.auto import tqdm

    from ..autolabel import label_image
    from ..inference.sources import input_sources, select_frames
    from ..io import write_image, write_mask

    options = _label_options(args)
    out = Path(args.out)
    refuse_inputs(out, args.images, within=True)  # a data set holding its own sources would mix them
    folder = OutputFolder(out, "dataset", inputs=args.images)
    folder.holds_output()  # a folder of the user's own files (a hand-labelled data set) is refused
    sources = input_sources([str(item) for item in args.images])[0]  # names unique among all
    frames = list(select_frames(sources, None))

    def stem_of(source, frame, mg=None) -> str:
        stem = source.stem or Path(source.name or mg.path).stem
        return stem + (f"_f{frame:05d}" if source.multi else "")

    for _, source, frame in frames:  # every known name checked before anything is written
        if source.name:
            stem = stem_of(source, frame)
            folder.check(f"images/{stem}.tif", overwrite=args.overwrite)
            folder.check(f"masks/{stem}.png", overwrite=args.overwrite)
    confidence = {}
    for _, source, frame in tqdm(frames, unit="image", desc="label", disable=args.quiet):
        mg = source.get(frame)
        stem = stem_of(source, frame, mg)
        labels, record = label_image(mg, args.method, particles=args.particles, **options)
        write_image(folder.claim(f"images/{stem}.tif", overwrite=args.overwrite), mg.data,
                    mg.pixel_size_nm, overwrite=True)
        write_mask(folder.claim(f"masks/{stem}.png", overwrite=args.overwrite),
                   np.asarray(labels, dtype="uint8"), overwrite=True)
        if not args.quiet:
            tqdm.write(f"{stem}: {record.summary()}")
        if record.confidence is not None:
            confidence[stem] = record.confidence
    n = len(frames)
    summary = ""
    if confidence:
        lowest = min(confidence, key=confidence.get)
        summary = (f"; confidence median {np.median(list(confidence.values())):.2f}, lowest "
                   f"{confidence[lowest]:.2f} ({lowest})")
    print(f"wrote {n} image(s) with automatic masks ({args.method}) to {out}/images and "
          f"{out}/masks{summary} (check them before training)")
