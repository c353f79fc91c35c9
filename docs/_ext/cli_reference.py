"""A Sphinx directive that renders the ``samprompt`` argument parser's help, command by command,
so the CLI reference is generated from the code and cannot drift from it."""

from __future__ import annotations

import argparse
from typing import Any

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective


def _subparsers(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.append((name, sub))
                found += [(f"{name} {n}", s) for n, s in _subparsers(sub)]
    return found


class CliReference(SphinxDirective):
    has_content = False

    def run(self) -> list[nodes.Node]:
        import os

        from samprompt.cli import build_parser

        os.environ["COLUMNS"] = "92"  # argparse wraps help to this width

        parser = build_parser()
        parser.formatter_class = argparse.RawDescriptionHelpFormatter
        out: list[nodes.Node] = [nodes.literal_block(text=parser.format_help(), language="text")]
        for name, sub in _subparsers(parser):
            section = nodes.section(ids=[nodes.make_id(f"samprompt {name}")])
            section += nodes.title(text=f"samprompt {name}")
            section += nodes.literal_block(text=sub.format_help(), language="text")
            out.append(section)
        return out


def setup(app: Sphinx) -> dict[str, Any]:
    app.add_directive("samprompt-cli", CliReference)
    return {"version": "1", "parallel_read_safe": True}
