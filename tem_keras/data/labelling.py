"""Automatic labels for images that have none.

The default labeller is :func:`tem_keras.autolabel.auto_labels` (polarity, particle size and
smoothing read from each image); Horwath et al. 2020's pseudo-labels stay available as
``method="horwath"``. The masks are written to a folder of their own, with what the labeller
chose for each image in ``labelling.json``; the user's images are never modified.
"""

from __future__ import annotations

import json
from pathlib import Path

from .datasets import Dataset, Sample

#: file written beside the masks: ``{stem: LabelRecord.to_dict()}``
RECORDS_FILE = "labelling.json"


def pseudo_label_dataset(dataset: Dataset, out_dir, *, particles: str = "dark", sigma: float = 2.0,
                         disk_radius: int = 3, overwrite: bool = False,
                         progress: bool = False, method: str = "auto",
                         scale_px: float | None = None) -> Dataset:
    """Give every unlabelled sample of ``dataset`` an automatic mask written to ``out_dir``.

    Parameters
    ----------
    dataset : Dataset
        From :func:`~tem_keras.data.datasets.discover` with ``include_unlabelled=True``.
    out_dir : str or Path
        Folder for the masks (``<stem>.png``) and :data:`RECORDS_FILE`.
    particles : {"dark", "bright", "auto"}
        Particle contrast: dark in bright-field TEM, bright in HAADF-STEM, ``"auto"`` estimated
        per image.
    sigma, disk_radius : float, int
        Smoothing and opening of ``method="horwath"`` (see
        :func:`tem_keras.analysis.baselines.pseudo_labels`); the automatic labeller sizes its own.
    overwrite : bool
        Replace existing masks and records in ``out_dir``.
    progress : bool
        Show a progress bar.
    method : {"auto", "horwath", "otsu"}
        The labeller (:func:`tem_keras.autolabel.label_image`).
    scale_px : float, optional
        Particle diameter in pixels for ``method="auto"``; estimated per image when None.

    Returns
    -------
    Dataset
        The same data set with every sample labelled.
    """
    from tqdm.auto import tqdm

    from ..autolabel import label_image
    from ..io import read_image, write_mask
    from ..io.writers import check_target

    out_dir = Path(out_dir)
    options = ({"sigma": sigma, "disk_radius": disk_radius} if method == "horwath"
               else {"sigma": sigma} if method == "otsu"
               else {"scale_px": scale_px} if method == "auto" else {})
    unlabelled = [s for s in dataset.samples if s.mask is None]
    records_path = check_target(out_dir / RECORDS_FILE, overwrite) if unlabelled else None
    samples, records = [], {}
    for sample in tqdm(dataset.samples, desc="pseudo-labels", unit="image", disable=not progress):
        if sample.mask is None:
            mask, record = label_image(read_image(sample.image).data, method,
                                       particles=particles, **options)
            path = write_mask(out_dir / f"{sample.stem}.png", mask, overwrite=overwrite)
            records[sample.stem] = record.to_dict()
            sample = Sample(sample.stem, sample.image, path)
        samples.append(sample)
    if records_path is not None:
        records_path.write_text(json.dumps(records, indent=1) + "\n")
    return Dataset(root=dataset.root, samples=samples, unpaired_images=[],
                   unpaired_masks=dataset.unpaired_masks, pixel_size_nm=dataset.pixel_size_nm,
                   class_names=dataset.class_names, split=dataset.split, layout=dataset.layout)
