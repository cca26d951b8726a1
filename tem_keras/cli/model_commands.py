"""``tem-keras`` model commands: models (the zoo table), export, explain."""

from __future__ import annotations

from .console import as_input_errors


def run_models(args) -> None:
    """``tem-keras models``: the model zoo table."""
    from ..models.describe import format_model_table, model_table

    print(format_model_table(model_table(pixel_size_nm=args.pixel_size_nm)))


@as_input_errors
def run_export(args) -> None:
    """``tem-keras export``: export a run folder."""
    from ..export import FORMATS, export

    formats = tuple(f.strip() for f in args.formats.split(",") if f.strip()) if args.formats else FORMATS
    export(args.run_dir, args.out_dir, formats=formats, overwrite=args.overwrite,
           threshold=args.threshold, pixel_size_nm=args.pixel_size_nm, name=args.name,
           verbose=not args.quiet)


@as_input_errors
def run_explain(args) -> None:
    """``tem-keras explain``: Grad-CAM, kernels, activations or effective receptive field."""
    from ..explain.report import write_explanation
    from ..artifacts import load

    bundle = load(args.model)
    files = write_explanation(bundle.model, None if args.image is None else str(args.image), args.method,
                              args.out, layer=args.layer, class_index=args.class_index,
                              target=args.target, preprocessing=bundle.preprocessing,
                              overwrite=args.overwrite)
    print(f"wrote {len(files)} file(s) to {args.out}: " + ", ".join(f.name for f in files[:6])
          + (", ..." if len(files) > 6 else ""))
