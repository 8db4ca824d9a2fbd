"""Every figure medjax draws. Importing this package sets matplotlib's backend,
once for all of them: ``Agg``, files only, so figures are drawn on machines
without a display. Each viz module imports ``medjax.viz`` before
``matplotlib.pyplot``."""

import matplotlib

matplotlib.use("Agg")
