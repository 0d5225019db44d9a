"""The suite's own order (conftest.pytest_collection_modifyitems): tests marked `long` run first, whatever order
pytest-randomly drew, so that on two workers none of them starts late and runs alone at the end."""
from __future__ import annotations


def test_long_tests_are_collected_before_every_other(request):
    items = request.session.items
    marked = [n for n, item in enumerate(items) if item.get_closest_marker("long") is not None]
    assert marked == list(range(len(marked))), [items[n].nodeid for n in marked]
    if len(items) > 1000:  # the whole suite: the four tests of a minute or more are among them
        assert len(marked) >= 4
