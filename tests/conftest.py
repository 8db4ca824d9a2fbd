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


@pytest.fixture(scope="session")
def tiny_cine(tmp_path_factory):
    """Cine phantoms of 4 frames of 16 x 16 pixels, 8 / 4 / 4 sequences."""
    from medjax.data.datasets.phantoms import phantoms

    return phantoms(
        kind="cine2d", image_size=16, num_frames=4,
        split_sizes={"train": 8, "validation": 4, "test": 4},
        data_dir=str(tmp_path_factory.mktemp("cine")), batch_size=4, eval_batch_size=4,
    )


CLI_TESTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cli")


def pytest_collection_modifyitems(config, items):
    """Marks every test in tests/cli/ ``slow``: they run the programs end to end.
    ``python -m pytest`` runs them (as .ci/run does); ``-m "not slow"`` leaves
    them out. Other end-to-end tests carry the marker themselves."""
    for item in items:
        if os.path.commonpath([str(item.path), CLI_TESTS]) == CLI_TESTS:
            item.add_marker(pytest.mark.slow)
