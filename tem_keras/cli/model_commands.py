"""``tem-keras`` model commands: models (the zoo table), export, explain."""

from __future__ import annotations

from .console import as_input_errors


def run_models(args) -> None:
    """``tem-keras models``: the model zoo table, from the numbers cached for this version (no
    TensorFlow), else from the networks built."""
    from ..models.table import cached_rows, format_rows

    rows = cached_rows(args.pixel_size_nm)
    if rows is None:
        from .._env import import_tensorflow_quietly
        from ..models.description import format_model_table, model_table

        import_tensorflow_quietly()
        print(format_model_table(model_table(pixel_size_nm=args.pixel_size_nm)))
        return
    print(format_rows(rows))


def _export_arguments(args) -> dict:
    from ..export import FORMATS

    return dict(formats=args.formats or FORMATS, overwrite=args.overwrite, threshold=args.threshold,
                pixel_size_nm=args.pixel_size_nm)


@as_input_errors
def check_export_command(args) -> None:
    """``tem-keras export``'s options, run folder and export folder, checked before TensorFlow
    starts."""
    from ..export import check_export

    check_export(args.run_dir, args.out_dir, **_export_arguments(args))


@as_input_errors
def run_export(args) -> None:
    """``tem-keras export``: export a run folder."""
    from ..export import export

    export(args.run_dir, args.out_dir, name=args.name, verbose=not args.quiet, **_export_arguments(args))


@as_input_errors
def run_explain(args) -> None:
    """``tem-keras explain``: Grad-CAM, kernels, activations or effective receptive field."""
    from ..explain.report import write_explanation
    from ..artifacts import load

    bundle = load(args.model)
    files = write_explanation(bundle.model, None if args.image is None else str(args.image), args.method,
                              args.out, layer=args.layer, class_index=args.class_index,
                              target=args.target, preprocessing=bundle.preprocessing,
                              overwrite=args.overwrite, class_names=bundle.classes)
    print(f"wrote {len(files)} file(s) to {args.out}: " + ", ".join(f.name for f in files[:6])
          + (", ..." if len(files) > 6 else ""))
