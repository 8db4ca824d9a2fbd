"""``medjax-register fixed=A.nii.gz moving=B.nii.gz output=DIR [method=[...]]``:
similarity-driven iterative registration of an image pair, or a trained
network's (``method=learned run_dir=DIR``, after any linear stages), written in
the formats ITK-based tools read (``medjax.inferers.registration``)."""

import sys

import hydra
import numpy as np
from omegaconf import DictConfig

from medjax.cli.common import (
    CONFIG_PATH,
    compilation_cache,
    quiet_libraries,
    quote_path_arguments,
    reports_errors,
)
from medjax.errors import ConfigError


def _methods(cfg: DictConfig):
    from medjax.inferers import registration as files
    from medjax.tasks.registration import IterativeRegistration

    stages = cfg.method
    stages = [str(stage) for stage in ([stages] if isinstance(stages, str) else stages)]
    files.check_stages(stages)
    if "learned" in stages and cfg.run_dir is None:
        raise ConfigError("method: the learned stage needs run_dir=DIR, a medjax-train "
                          "task=registration run")
    if "learned" not in stages and cfg.run_dir is not None:
        raise ConfigError(f"run_dir={cfg.run_dir}: only the learned stage reads a run; "
                          "add it to method, e.g. method=learned or method=[affine,learned]")
    options = {"num_bins": int(cfg.num_bins)} if cfg.similarity == "mi" else {}
    if cfg.similarity == "lncc":
        options = {"window": int(cfg.window)}
    methods = []
    for stage in stages:
        if stage == "learned":  # restored once the images are read
            methods.append(stage)
            continue
        try:
            methods.append(IterativeRegistration(
                transform=str(stage), similarity=str(cfg.similarity),
                similarity_options=tuple(options.items()),
                levels=tuple(cfg.levels), iterations=tuple(cfg.iterations),
                optimizer=str(cfg.optimizer), learning_rate=float(cfg.learning_rate),
                regularizer=str(cfg.regularizer), regularization=float(cfg.regularization),
                grid_spacing=int(cfg.grid_spacing),
            ))
        except ValueError as error:
            raise ConfigError(str(error)) from None
    return methods


@hydra.main(version_base=None, config_path=CONFIG_PATH, config_name="register")
@reports_errors("medjax-register")
def _register(cfg: DictConfig) -> None:
    from medjax.data import io
    from medjax.inferers import registration as files
    from medjax.metrics import registration as metrics
    from medjax.tasks.registration import world

    quiet_libraries()
    methods = _methods(cfg)  # bad options: one line before anything is read
    if cfg.initialize not in ("geometry", "moments"):
        raise ConfigError(f"initialize: expected geometry or moments, got {cfg.initialize!r}")
    fixed_volume, moving_volume = io.load_image(cfg.fixed), io.load_image(cfg.moving)
    fixed = files.spatial_array(fixed_volume, "fixed")
    moving = files.spatial_array(moving_volume, "moving")
    files.check_pair(fixed, moving, str(cfg.fixed), str(cfg.moving))
    labels = None
    if cfg.labels is not None:
        labels = files.spatial_array(io.load_image(cfg.labels), "labels")
        if labels.shape != moving.shape:
            raise ConfigError(
                f"labels={cfg.labels}: shape {labels.shape} is not the moving image's "
                f"{moving.shape}"
            )
    compilation_cache(cfg)
    if "learned" in methods:
        methods[-1] = _learned_stage(cfg, fixed_volume, moving_volume, fixed, moving)
    ndim = fixed.ndim
    spacing = world.voxel_spacing(fixed_volume.affine, ndim)
    fixed_input = files.normalize(fixed) if cfg.normalize else fixed
    moving_input = files.normalize(moving) if cfg.normalize else moving
    first = files.initial_map(fixed_input, moving_input, fixed_volume.affine,
                              moving_volume.affine, str(cfg.initialize))
    result = files.register_arrays(fixed_input, moving_input, first, methods, spacing)
    written = files.write_result(result, fixed_volume, moving_volume, cfg.output,
                                 moving_image=moving, labels=labels)
    for index, stage in enumerate(result.stages, start=1):
        print(f"stage {index}/{len(result.stages)} {stage.transform}: {cfg.similarity} "
              f"loss {stage.first_loss:.4f} -> {stage.last_loss:.4f} in {stage.seconds:.1f} s")
    folding = float(metrics.folding_fraction(result.displacement[None])[0])
    print(f"registered {cfg.moving} {moving.shape} onto {cfg.fixed} {fixed.shape}; "
          f"folding {100 * folding:.3f}% of voxels")
    print("wrote " + ", ".join(str(path) for path in written.values()))


def _learned_stage(cfg, fixed_volume, moving_volume, fixed, moving):
    """The network of run ``cfg.run_dir`` as the last stage, and a note when the
    images' voxels are not the size it was trained at."""
    from medjax.inferers import learned_registration

    model = learned_registration.load_learned(str(cfg.run_dir), cfg.checkpoint)
    if model.spacing is not None and fixed_volume.source != "png":
        trained = np.asarray(model.spacing[: fixed.ndim])
        given = np.asarray(fixed_volume.spacing[: fixed.ndim])
        if trained.shape == given.shape and np.any(np.abs(given / trained - 1) > 0.25):
            print(f"note: {cfg.run_dir} was trained on {tuple(trained.round(2))} mm voxels; "
                  f"fixed={cfg.fixed} has {tuple(given.round(2))} mm")
    print(f"learned stage: step {model.step} of {cfg.run_dir}")
    return model.stage(fixed_volume, moving_volume, fixed, moving)


def main() -> None:
    sys.argv[1:] = quote_path_arguments(
        sys.argv[1:], keys=("fixed", "moving", "output", "labels")
    )
    _register()
