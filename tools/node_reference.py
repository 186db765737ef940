#!/usr/bin/env python3
"""Write the generated tables of ``docs/node.md`` from the code that defines them.

    python tools/node_reference.py           # rewrite the tables in docs/node.md
    python tools/node_reference.py --check   # exit 1 when docs/node.md is out of date

The tables: the outputs (``panoptic_depthlab_ros.node_outputs.OUTPUTS``), the parameters
(``panoptic_depthlab_ros.ros.parameters.PARAMETERS``) and the ``/diagnostics`` keys
(``pipeline.COUNTERS``, ``pipeline.STAGES``, ``ros.node.STATUS_KEYS``).  Each sits
between ``<!-- BEGIN GENERATED name -->`` and ``<!-- END GENERATED name -->``; the
prose around them is written by hand.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the checkout's code documents the checkout, not an installed copy

from panoptic_depthlab_ros.node_outputs import OUTPUTS, QOS_DEPTH, Output  # noqa: E402
from panoptic_depthlab_ros.pipeline import COUNTERS, STAGES  # noqa: E402
from panoptic_depthlab_ros.ros.node import LATENCY_KEYS, STATUS_KEYS  # noqa: E402
from panoptic_depthlab_ros.ros.parameters import PARAMETERS, ParameterSpec  # noqa: E402

PAGE = REPO / "docs" / "node.md"
_SECTION = re.compile(r"(<!-- BEGIN GENERATED (\w+) -->\n)(.*?)(<!-- END GENERATED \2 -->)", re.S)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _short_type(msg_type: str) -> str:
    return msg_type.replace("/msg/", "/")


def _needs(output: Output) -> str:
    flags = (
        ("camera_info", output.needs_intrinsics),
        ("trained depth", output.needs_depth),
        ("tracking", output.needs_tracks),
    )
    needs = [what for what, flag in flags if flag]
    return ", ".join(needs) or "-"


def outputs_table() -> str:
    """One row per output, in publish order."""
    rows = [
        [
            f"`~/{o.name}`",
            f"`{_short_type(o.msg_type)}`" + (f" {o.encoding}" if o.encoding else ""),
            _needs(o),
            f"reliable, keep last {QOS_DEPTH[o.qos]}",
            o.description,
        ]
        for o in OUTPUTS
    ]
    return _table(["topic", "type", "needs", "QoS", "content"], rows)


def _default(spec: ParameterSpec) -> str:
    if isinstance(spec.default, bool):
        return f"`{str(spec.default).lower()}`"
    if isinstance(spec.default, str):
        return f'`"{spec.default}"`'
    if isinstance(spec.default, tuple):
        return "`[" + ", ".join(str(v) for v in spec.default) + "]`"  # strings bare, as YAML reads them
    return f"`{spec.default}`"


def parameters_table() -> str:
    """One row per parameter, in declaration order (the order of the YAML file)."""
    rows = [
        [
            f"`{p.name}`",
            p.type_name,
            _default(p),
            p.range_text() or "-",
            "yes" if p.dynamic else "no",
            p.description,
        ]
        for p in PARAMETERS
    ]
    return _table(["name", "type", "default", "range", "run time", "description"], rows)


def diagnostics_table() -> str:
    """Every key of the node's ``/diagnostics`` status."""
    rows = [[f"`{name}`", text] for name, text in COUNTERS.items()]
    rows += [[f"`{name}`", text] for name, text in STATUS_KEYS.items()]
    suffixes = ",".join(LATENCY_KEYS)
    rows += [[f"`{stage}_ms_{{{suffixes}}}`", f"milliseconds, {text}"] for stage, text in STAGES.items()]
    return _table(["key", "meaning"], rows)


TABLES: dict[str, Callable[[], str]] = {
    "outputs": outputs_table,
    "parameters": parameters_table,
    "diagnostics": diagnostics_table,
}


def render(page: str) -> str:
    """``page`` with every generated section replaced by its table; an unknown or missing section is an error."""
    found: list[str] = []

    def replace(match: re.Match[str]) -> str:
        name = match.group(2)
        if name not in TABLES:
            raise ValueError(f"docs/node.md: unknown generated section {name!r} (known: {', '.join(TABLES)})")
        found.append(name)
        return match.group(1) + TABLES[name]() + match.group(4)

    out = _SECTION.sub(replace, page)
    missing = sorted(set(TABLES) - set(found))
    if missing:
        raise ValueError(f"docs/node.md: no generated section for {', '.join(missing)}")
    return out


def main(argv: list[str] | None = None) -> int:
    """Rewrite the page, or with ``--check`` say whether it is up to date."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 when the page is out of date")
    args = parser.parse_args(argv)
    page = PAGE.read_text()
    try:
        new = render(page)
    except ValueError as exc:
        print(f"node_reference: {exc}", file=sys.stderr)
        return 2
    if args.check:
        if new != page:
            print(f"{PAGE} is out of date: run python tools/node_reference.py", file=sys.stderr)
            return 1
        return 0
    if new != page:
        PAGE.write_text(new)
        print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
