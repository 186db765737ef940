"""docs/node.md: its generated tables are those of the code (tools/node_reference.py), and its
parameter table agrees with the parameter table and config/panoptic_depthlab.yaml."""

from __future__ import annotations

import importlib.util
import re

import yaml

from panoptic_depthlab_ros.node_outputs import OUTPUTS
from panoptic_depthlab_ros.ros.parameters import PARAMETERS
from pdl_testing import REPO

PAGE = REPO / "docs" / "node.md"


def _generator():
    spec = importlib.util.spec_from_file_location("node_reference", REPO / "tools" / "node_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _section(name: str) -> list[list[str]]:
    """The rows (cells) of generated section ``name`` of the page, header and rule left out."""
    text = PAGE.read_text()
    body = re.search(rf"<!-- BEGIN GENERATED {name} -->\n(.*?)<!-- END GENERATED {name} -->", text, re.S)
    assert body is not None, name
    lines = body.group(1).strip().splitlines()[2:]
    return [[c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines]


def test_the_page_is_up_to_date() -> None:
    page = PAGE.read_text()
    assert _generator().render(page) == page, "docs/node.md is out of date: run python tools/node_reference.py"


def test_parameter_table_agrees_with_the_code_and_the_yaml() -> None:
    rows = _section("parameters")
    yaml_values = yaml.safe_load((REPO / "config" / "panoptic_depthlab.yaml").read_text())["panoptic_depthlab"][
        "ros__parameters"
    ]
    assert [r[0].strip("`") for r in rows] == [p.name for p in PARAMETERS] == list(yaml_values)
    for row, spec in zip(rows, PARAMETERS, strict=True):
        name, kind, default, _range, run_time, description = row
        assert kind == spec.type_name, name
        assert yaml.safe_load(default.strip("`")) == yaml_values[spec.name] == spec.default, name
        assert run_time == ("yes" if spec.dynamic else "no"), name
        assert description == spec.description.replace("|", "\\|"), name


def test_output_table_lists_every_output_in_publish_order() -> None:
    rows = _section("outputs")
    assert [r[0] for r in rows] == [f"`~/{o.name}`" for o in OUTPUTS]
    for row, output in zip(rows, OUTPUTS, strict=True):
        assert output.msg_type.replace("/msg/", "/") in row[1]
        assert ("camera_info" in row[2]) == output.needs_intrinsics


def test_a_stale_page_is_caught() -> None:
    generator = _generator()
    page = PAGE.read_text()
    stale = page.replace("| `top_k` |", "| `top_k_old` |", 1)
    assert stale != page and generator.render(stale) == page
