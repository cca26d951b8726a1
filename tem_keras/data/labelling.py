"""Automatic labels for images that have none (Horwath et al. 2020's pseudo-labels).

The masks are written to a folder of their own; the user's images are never modified.
"""

from __future__ import annotations

from pathlib import Path

from .datasets import Dataset, Sample


def pseudo_label_dataset(dataset: Dataset, out_dir, *, particles: str = "dark", sigma: float = 2.0,
                         disk_radius: int = 3, overwrite: bool = False,
                         progress: bool = False) -> Dataset:
    """Give every unlabelled sample of ``dataset`` a pseudo-label mask written to ``out_dir``.

    Parameters
    ----------
    dataset : Dataset
        From :func:`~tem_keras.data.datasets.discover` with ``include_unlabelled=True``.
    out_dir : str or Path
        Folder for the masks (``<stem>.png``).
    particles : {"dark", "bright", "auto"}
        Particle contrast: dark in bright-field TEM, bright in HAADF-STEM.
    sigma, disk_radius : float, int
        See :func:`tem_keras.baselines.pseudo_labels`.

    Returns
    -------
    Dataset
        The same data set with every sample labelled.
    """
    from tqdm.auto import tqdm

    from ..baselines import pseudo_labels
    from ..io import read_image, write_mask

    out_dir = Path(out_dir)
    samples = []
    for sample in tqdm(dataset.samples, desc="pseudo-labels", unit="image", disable=not progress):
        if sample.mask is None:
            mask = pseudo_labels(read_image(sample.image).data, sigma=sigma, disk_radius=disk_radius,
                                 particles=particles)
            path = write_mask(out_dir / f"{sample.stem}.png", mask, overwrite=overwrite)
            sample = Sample(sample.stem, sample.image, path)
        samples.append(sample)
    return Dataset(root=dataset.root, samples=samples, unpaired_images=[],
                   unpaired_masks=dataset.unpaired_masks, pixel_size_nm=dataset.pixel_size_nm,
                   class_names=dataset.class_names, split=dataset.split, layout=dataset.layout)
