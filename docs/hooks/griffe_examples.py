"""Griffe extension for the API reference: the docstrings are written for reading in the source
(a few reStructuredText habits); render them as well as Markdown allows, changing no words.

- ``Example:`` becomes the Google style's ``Examples:`` section, so its ``>>>`` lines render as
  code (griffe knows only the plural; the singular would be an admonition whose ``>>>`` lines read
  as Markdown block quotes);
- Sphinx roles (``:func:`x```, ``:class:`~a.B```) become plain code spans;
- a reStructuredText simple table (rows between lines of ``=``) is shown as preformatted text.
"""
from __future__ import annotations

import re

import griffe

EXAMPLE = re.compile(r"^(\s*)Example:[ \t]*$", re.MULTILINE)
ROLE = re.compile(r":(?:py:)?(?:func|class|mod|meth|data|attr|exc|obj|const):`~?")
RULE = re.compile(r"^\s*=+( +=+)+\s*$")


def _tables_as_text(text: str) -> str:
    """Fence each reStructuredText simple table (three ``=`` rule lines: top, under the header, bottom)."""
    lines, out, i = text.split("\n"), [], 0
    while i < len(lines):
        rules = [j for j in range(i, len(lines)) if RULE.match(lines[j])][:3] if RULE.match(lines[i]) else []
        if len(rules) == 3:
            indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
            out += [f"{indent}```text", *lines[i:rules[2] + 1], f"{indent}```"]
            i = rules[2] + 1
        else:
            out.append(lines[i])
            i += 1
    return "\n".join(out)


class ExampleSections(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            value = EXAMPLE.sub(r"\1Examples:", obj.docstring.value)
            obj.docstring.value = _tables_as_text(ROLE.sub("`", value))
