"""The spec's ``full_text`` block: on by default over the embedded columns, its columns served,
its settings handed to the index as a ``TextConfig``, mistakes refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from quiver.resources.dagster_resources import text_config
from quiver.resources.index.text_index import TextConfig
from quiver.resources.spec import SpecError, parse_spec
from quiver.resources.warehouse import layout_for


def dataset(**extra):
    data = {"name": "products", "from": "p.parquet", "primary_key": "id", "embeddings": {"columns": ["title", "body"], "separator": ": "}}
    return parse_spec({"datasets": [data | extra]}, Path("/specs")).datasets[0]


def test_on_by_default_over_the_embedded_columns():
    spec = dataset()
    assert spec.full_text_columns == ("title", "body")
    assert text_config(spec) == TextConfig(("title", "body"), ("title", "body"), ": ", None)


def test_full_text_columns_are_served_even_when_columns_leaves_them_out():
    spec = dataset(columns=["price"], full_text={"columns": ["sku", "title"], "stemmer": "English"})
    assert spec.served_columns == ("price", "sku", "title")
    assert layout_for(spec).served_columns == ("price", "sku", "title")
    assert text_config(spec) == TextConfig(("sku", "title"), ("title", "body"), ": ", "english")


def test_turned_off_there_is_no_text_index_and_nothing_extra_is_served():
    spec = dataset(columns=["price"], full_text={"enabled": False})
    assert text_config(spec) is None and spec.served_columns == ("price",)


@pytest.mark.parametrize(
    "block, fragment",
    [
        ({"stemmer": "klingon"}, "must be one of arabic"),
        ({"columns": []}, "is empty"),
        ({"columns": ["_key"]}, "reserved"),
        ({"enabled": "yes"}, "enabled"),
        ({"analyzer": "x"}, "analyzer"),
    ],
)
def test_mistakes_are_refused_by_name(block, fragment):
    with pytest.raises(SpecError) as caught:
        dataset(full_text=block)
    assert "products" in str(caught.value) and fragment in str(caught.value) and "full_text" in str(caught.value)
