"""``medjax.data.io`` itself: names that moved out of it still resolve there."""

import pytest

from medjax.data import io, preprocess
from medjax.data.datasets.decathlon import source as decathlon_source
from medjax.viz import overlay


def test_moved_names_resolve_to_their_new_homes():
    assert io.resample_to_spacing is preprocess.resample_to_spacing
    assert io.ct_window is preprocess.ct_window
    assert io.save_overlay_png is overlay.save_overlay_png
    assert io.DecathlonSource is decathlon_source.DecathlonSource
    with pytest.raises(AttributeError, match="no attribute 'not_a_loader'"):
        io.not_a_loader  # noqa: B018
