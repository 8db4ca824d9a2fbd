"""Every figure medjax draws. Importing this package sets matplotlib's backend,
once for all of them: ``Agg``, files only, so figures are drawn on machines
without a display. Each viz module imports ``medjax.viz`` and saves its
figures through ``save_figure`` (atomically: a temporary name, then a rename)."""

import os

import matplotlib

from medjax import files

matplotlib.use("Agg")


def save_figure(fig, path: str, *, dpi: int, **savefig_options) -> None:
    """Saves ``fig`` to ``path`` atomically and closes it.

    The figure is drawn to a temporary name beside ``path`` (in the format named
    by ``path``'s suffix) and renamed over it, so a crash or a full disk leaves
    the previous figure whole (``medjax.files.atomic_path``); the parent folder
    is created.

    Args:
      fig: a ``matplotlib.figure.Figure``; closed even if saving fails.
      path: where the figure goes, e.g. ``figures/curves.png``.
      dpi: resolution of the raster formats.
      **savefig_options: passed to ``Figure.savefig`` (e.g. ``bbox_inches``).

    Raises:
      WriteError: the file could not be written (the previous one is intact).
    """
    import matplotlib.pyplot as plt

    suffix = os.path.splitext(path)[1].lstrip(".").lower()
    try:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with files.atomic_path(path) as temporary:
            fig.savefig(temporary, dpi=dpi, format=suffix or None, **savefig_options)
    finally:
        plt.close(fig)
