"""Test set-up: 4 forced CPU devices (before JAX is imported anywhere) and a tiny
phantom dataset built once per session."""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402

TINY_SPLITS = {"train": 64, "validation": 20, "test": 12}


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """A data directory shared by the session, with the tiny phantoms built."""
    from medjax.data.datasets.phantoms.builder import phantom_sources

    directory = str(tmp_path_factory.mktemp("medjax_data"))
    phantom_sources(image_size=32, split_sizes=TINY_SPLITS, data_dir=directory)
    return directory


@pytest.fixture(scope="session")
def tiny_data(data_dir):
    from medjax.data.datasets.phantoms import phantoms

    return phantoms(
        image_size=32, split_sizes=TINY_SPLITS, data_dir=data_dir,
        batch_size=8, eval_batch_size=8,
    )
