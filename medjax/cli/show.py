"""``medjax-show data=... augment=...``: a PNG of samples before and after
augmentation."""

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from medjax.cli.common import (
    CONFIG_PATH, fail, quiet_libraries, quote_path_arguments, reports_errors,
)
from medjax.config.build import build


@hydra.main(version_base=None, config_path=CONFIG_PATH, config_name="show")
@reports_errors("medjax-show")
def _show(cfg: DictConfig) -> None:
    import numpy as np

    from medjax.data import pipeline
    from medjax.runtime import random_key
    from medjax.viz.samples import augment_for_display, layout, sample_grid

    quiet_libraries()
    data = build(cfg.data, "data")
    augment = build(cfg.augment, "augment") if cfg.get("augment") else None
    source = data.source(cfg.split)
    count = min(int(cfg.num_examples), len(source))
    indices = np.random.default_rng(cfg.seed).choice(len(source), count, replace=False)
    record = source[int(indices[0])]
    batch = pipeline.read_examples(source, indices, data.convert, tuple(record))
    name = data.name or cfg.data.get("kind", "data")
    augment_name = HydraConfig.get().runtime.choices.get("augment", "")
    # What is drawn, and how augmentation moves it, comes from the data's roles.
    try:
        layout(data.schema, batch)  # e.g. tabular data: nothing to draw
        augmented = None
        if augment is not None:
            augmented = augment_for_display(
                augment, random_key(cfg.seed), batch, data.schema
            )
    except ValueError as error:
        fail("medjax-show", error)
    sample_grid(
        batch,
        augmented,
        cfg.output,
        schema=data.schema,
        title=f"{name} ({cfg.split}); augment={augment_name}",
    )
    print(f"wrote {cfg.output}")


def main() -> None:
    sys.argv[1:] = quote_path_arguments(sys.argv[1:], keys=("output", "data.data_dir"))
    _show()
