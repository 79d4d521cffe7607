"""A griffe extension: the RST habits of mdc-jax's Google-style docstrings, rendered as Markdown.

The docstrings are read by ``help()`` and by this site, so they keep their plain-text form and this
extension translates, before griffe parses the sections:

* ``:func:`name``` (and ``:class:``, ``:mod:``, ``:data:``, ...) → a cross-reference to ``name``, written
  `` `name` `` (``~a.b.c`` → `` `c` ``). A name griffe finds (from the docstring's own scope, or
  from ``mdc_jax``) becomes a link wherever its object is rendered on the site, and plain code
  where it is not (an internal module); a full ``mdc_jax.…`` name that does not exist is a broken
  cross-reference, which fails ``mkdocs build --strict``;
* ``.. math::`` and its indented block → a ``$$ … $$`` block (pymdownx.arithmatex);
* a paragraph ending in ``::`` and the indented block after it → the paragraph ending in ``:`` and a
  fenced code block (``Example::`` alone becomes an emphasised *Example:*, so that griffe does not
  take it for a section).

Loaded by mkdocs.yml (``extensions: [docs/_mkdocs/rst_docstrings.py]``); not part of the package.
"""

from __future__ import annotations

import re
import textwrap

import griffe

_ROLE = re.compile(r":(?:func|class|mod|meth|attr|data|obj|exc|const|ref):`(~?)([^`]+)`")


def _lookup(scope: griffe.Object, dotted: str) -> griffe.Object | None:
    """``dotted`` (``a.b.c``) as a member path from ``scope``, or None."""
    obj = scope
    try:
        for part in dotted.split("."):
            obj = obj.members[part]
        return obj.final_target if obj.is_alias else obj
    except (KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None


def _resolve(obj: griffe.Object, target: str) -> griffe.Object | None:
    """What ``target`` names, seen from ``obj``'s docstring: its own members, its parents', or a full path."""
    root = obj
    while root.parent is not None:
        root = root.parent
    if target.split(".")[0] == root.name:
        return _lookup(root, target.split(".", 1)[1]) if "." in target else root
    scope = obj if obj.is_module or obj.is_class else obj.parent
    while scope is not None:
        if (found := _lookup(scope, target)) is not None:
            return found
        scope = scope.parent
    return None


def _role(obj: griffe.Object | None, match: re.Match) -> str:
    short, target = match.groups()
    title = target.rsplit(".", 1)[-1] if short else target
    found = _resolve(obj, target) if obj is not None else None
    if found is not None:
        return f'<autoref identifier="{found.path}" optional><code>{title}</code></autoref>'
    if obj is not None and target.startswith("mdc_jax."):
        return f"[`{title}`][{target}]"  # names nothing: autorefs reports it, --strict fails
    return f"`{title}`"


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _block(lines: list[str], start: int, parent: int) -> tuple[list[str], int]:
    """The lines from ``start`` indented deeper than ``parent`` (blank lines inside kept), and the end index."""
    end = start
    while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) > parent):
        end += 1
    while end > start and not lines[end - 1].strip():
        end -= 1
    return lines[start:end], end


def translate(text: str, obj: griffe.Object | None = None) -> str:
    """The docstring ``text`` (of ``obj``, whose scope resolves the roles) with its RST roles, math and
    literal blocks written as Markdown."""
    text = _ROLE.sub(lambda match: _role(obj, match), text)
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.endswith("::") and not stripped.startswith(">>>"):
            pad = " " * _indent(line)
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            body, end = _block(lines, j, _indent(line))
            if body:
                body = textwrap.dedent("\n".join(body)).split("\n")
                head = stripped[:-2].rstrip()
                if head == ".. math":
                    out += [pad + "$$", *(pad + b if b else "" for b in body), pad + "$$"]
                else:
                    if re.fullmatch(r"\w+", head):
                        out.append(f"{pad}*{head}:*")
                    elif head:
                        out.append(pad + head + ":")
                    out += ["", pad + "```text", *(pad + b if b else "" for b in body), pad + "```"]
                out.append("")
                i = end
                continue
        out.append(line)
        i += 1
    return "\n".join(out)


def _objects(obj: griffe.Object):
    yield obj
    for member in obj.members.values():
        if not member.is_alias and (member.is_module or member.is_class or member.parent is obj):
            yield from _objects(member)


class RSTDocstrings(griffe.Extension):
    """Rewrites every docstring of a package with :func:`translate` once griffe has loaded the whole package
    (so that the roles resolve)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs) -> None:
        for obj in _objects(pkg):
            if obj.docstring is not None:
                obj.docstring.value = translate(obj.docstring.value, obj)
