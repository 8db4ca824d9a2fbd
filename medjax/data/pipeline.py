"""From random-access sources to batches on devices.

Training batches are a pure function of the step: step ``s`` reads slice ``s`` of
epoch ``s // steps_per_epoch``'s permutation (seeded by ``(seed, epoch)``), and the
remainder of each epoch is dropped. A run resumed at step ``s`` therefore sees the
same batches as one that never stopped. Evaluation batches cover a split exactly
once: the last one is padded and its padding marked ``valid = False``.

grain reads and decodes ahead in threads; each process reads only its own slice of
every global batch, which ``to_devices`` assembles into arrays sharded over the
mesh's ``data`` axis.
"""

import dataclasses
import functools
from collections.abc import Callable, Iterator, Sequence

import grain
import jax
import numpy as np

from medjax.data import preprocess
from medjax.errors import ConfigError

Example = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class CTWindow:
    """Maps HU to model inputs: clip to ``[center - width/2, center + width/2]`` and
    rescale to [-1, 1]. The default is the abdominal soft-tissue window (W400 L40)."""

    center: float = 40.0
    width: float = 400.0

    def __call__(self, hu: np.ndarray) -> np.ndarray:
        return preprocess.ct_window(hu, self.center, self.width)


#: The phantoms' MR intensities (arbitrary units) are divided by this.
MR_SCALE = 1000.0


def phantom_example(
    window: CTWindow, *, image_is_ct: bool = True, mr_scale: float = MR_SCALE
) -> Callable[[Example], Example]:
    """Converts a ``medjax_phantoms`` record to the batch convention: ``image``
    through ``window`` when it is CT (HU), else divided by ``mr_scale`` like
    ``mr_image``; integer labels and masks to int32; points to float32; validity
    masks stay bool."""

    def convert(record: Example) -> Example:
        example = {}
        for key, value in record.items():
            value = np.asarray(value)
            if key == "image" and image_is_ct:
                example[key] = window(value)
            elif key in ("image", "mr_image"):
                example[key] = value.astype(np.float32) / mr_scale
            elif value.dtype == np.bool_:
                example[key] = value
            elif np.issubdtype(value.dtype, np.integer):
                example[key] = value.astype(np.int32)
            else:
                example[key] = value.astype(np.float32)
        return example

    return convert


def _stack(examples: Sequence[Example], keys: Sequence[str]) -> Example:
    return {key: np.stack([example[key] for example in examples]) for key in keys}


def read_examples(source, indices: Sequence[int], convert, keys) -> Example:
    """Fields ``keys`` of records ``indices`` of ``source``, converted and stacked:
    ``{key: [N, ...]}``. Only those fields are converted (this is the data path of
    every step)."""
    records = source.__getitems__(list(indices))
    return _stack([convert({k: r[k] for k in keys}) for r in records], keys)


def _process_slice(global_batch_size: int) -> slice:
    count, index = jax.process_count(), jax.process_index()
    if global_batch_size % count:
        raise ConfigError(
            f"data.batch_size={global_batch_size} does not divide by the "
            f"{count} processes"
        )
    local = global_batch_size // count
    return slice(index * local, (index + 1) * local)


def _threads(dataset: grain.MapDataset, num_threads: int) -> Iterator[Example]:
    options = grain.ReadOptions(
        num_threads=num_threads, prefetch_buffer_size=2 * num_threads
    )
    return iter(dataset.to_iter_dataset(options))


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    if batch_size > num_examples:
        raise ConfigError(
            f"data.batch_size={batch_size} exceeds the {num_examples} training examples"
        )
    return num_examples // batch_size


def train_batches(
    source,
    *,
    batch_size: int,
    seed: int,
    start_step: int,
    num_steps: int,
    convert: Callable[[Example], Example],
    keys: Sequence[str],
    num_threads: int = 2,
    sample_weights: np.ndarray | None = None,
) -> Iterator[Example]:
    """This process's part of the global training batches of steps ``start_step``
    to ``num_steps - 1``; each has ``valid`` all True.

    With ``sample_weights [N]`` each epoch's order is ``N`` draws with
    replacement, example ``i`` drawn with probability proportional to its weight
    (class-balanced sampling), still a function of ``(seed, epoch)``."""
    per_epoch = steps_per_epoch(len(source), batch_size)
    mine = _process_slice(batch_size)
    if sample_weights is not None:
        sample_weights = np.asarray(sample_weights, np.float64)
        if sample_weights.shape != (len(source),) or not np.all(sample_weights >= 0):
            raise ValueError(
                f"sample_weights: expected {len(source)} non-negative weights, got "
                f"shape {sample_weights.shape}"
            )
        probabilities = sample_weights / sample_weights.sum()

    @functools.lru_cache(maxsize=2)
    def permutation(epoch: int) -> np.ndarray:
        rng = np.random.default_rng([seed, epoch])
        if sample_weights is None:
            return rng.permutation(len(source))
        return rng.choice(len(source), len(source), replace=True, p=probabilities)

    def batch(step: int) -> Example:
        epoch, position = divmod(step, per_epoch)
        indices = permutation(epoch)[
            position * batch_size : (position + 1) * batch_size
        ]
        examples = read_examples(source, indices[mine], convert, keys)
        examples["valid"] = np.ones(len(indices[mine]), bool)
        return examples

    steps = grain.MapDataset.range(start_step, num_steps).map(batch)
    return _threads(steps, num_threads)


def num_eval_batches(num_examples: int, batch_size: int) -> int:
    return -(-num_examples // batch_size)


def eval_batches(
    source,
    *,
    batch_size: int,
    convert: Callable[[Example], Example],
    keys: Sequence[str],
    num_threads: int = 2,
) -> Iterator[Example]:
    """This process's part of every evaluation batch of ``source``, in order. The
    last batch is completed by repeating its first example, with ``valid`` False
    on the copies, so each example is counted exactly once."""
    num_examples = len(source)
    mine = _process_slice(batch_size)

    def batch(index: int) -> Example:
        indices = np.arange(index * batch_size, (index + 1) * batch_size)
        valid = indices < num_examples
        indices = np.where(valid, indices, indices[0])
        examples = read_examples(source, indices[mine], convert, keys)
        examples["valid"] = valid[mine]
        return examples

    batches = grain.MapDataset.range(num_eval_batches(num_examples, batch_size))
    return _threads(batches.map(batch), num_threads)


def to_devices(batch: Example, sharding: jax.sharding.Sharding) -> dict[str, jax.Array]:
    """Assembles every process's part into global arrays sharded by ``sharding``."""
    return {
        key: jax.make_array_from_process_local_data(sharding, value)
        for key, value in batch.items()
    }
