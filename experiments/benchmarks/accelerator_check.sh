#!/usr/bin/env bash
# On a machine with an NVIDIA GPU (CUDA 12 driver), from the repository root:
#   bash experiments/benchmarks/accelerator_check.sh
# installs medjax with the CUDA build of JAX, then runs the main job and the
# training-step benchmark in float32 and bfloat16, printing wall clock and
# images/s (nothing here needs the internet beyond the package registry).
set -euo pipefail
python -m pip install -q -e . "jax[cuda12]==0.10.2"
python - <<'PY'
import jax
assert jax.default_backend() == "gpu", f"no GPU for JAX: {jax.devices()}"
print("JAX devices:", jax.devices())
PY
for precision in fp32 bf16; do
  start=$(date +%s.%N)
  medjax-train trainer.precision=$precision trainer.progress=false \
      hydra.run.dir=runs/accelerator_check/main_job_$precision | tail -3
  end=$(date +%s.%N)
  python -c "import json; s = json.load(open('runs/accelerator_check/main_job_$precision/summary.json')); \
print('main job $precision: %.0f s wall, %.0f train img/s, validation auroc %.4f' % \
($end - $start, s['train_images_per_second'], s['final']['validation']['auroc']))"
done
python experiments/benchmarks/precision_step.py --repeats 50 --batches 1 4
