"""mkdocs hooks: BENCHMARKS.md, at the repository root, is also the site's ``benchmarks.md``.

The guides link ``../BENCHMARKS.md`` (right on GitHub, where docs/ sits beside it); the site serves
the same file as ``benchmarks.md`` and rewrites those links to it, so that ``mkdocs build --strict``
checks them like every other link (and BENCHMARKS.md's own links into docs/, written from the
repository root, are made relative to the site).
"""

import re
from pathlib import Path

from mkdocs.structure.files import File

_BENCHMARKS = re.compile(r"\]\((?:\.\./)+BENCHMARKS\.md(#[^)\s]*)?\)")


def on_files(files, config):
    source = Path(config["config_file_path"]).parent / "BENCHMARKS.md"
    files.append(File.generated(config, "benchmarks.md", content=source.read_text(encoding="utf-8")))
    return files


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri == "benchmarks.md":  # its links into docs/ are written from the repository root
        markdown = markdown.replace("](docs/", "](")
    depth = page.file.src_uri.count("/")
    return _BENCHMARKS.sub(lambda m: "](" + "../" * depth + "benchmarks.md" + (m.group(1) or "") + ")", markdown)
