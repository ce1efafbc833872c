"""A report as a list of blocks, rendered twice: Markdown with relative image links (for a viewer that
shows the run folder, such as GitHub) and one self-contained HTML file with every image inlined (for a
reader who opens a single file).

Blocks hold absolute image paths; each renderer makes them relative to the folder the report is written
into, so one document can be written at the top of a multi-seed run and still point into seed folders.
Both files are written through a temporary file and os.replace: a run killed mid-write keeps the previous
report whole.
"""

from __future__ import annotations

import base64
import html
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Image:
    path: Path
    alt: str = ""
    width: int | None = None  # display width in pixels (HTML and Markdown via <img>); None: natural size


# A table cell: plain text, an image, or a vertical stack of both (an image with its caption under it).
Cell = str | Image | list[str | Image]


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Paragraph:
    text: str  # `code` spans and **bold** are understood by both renderers


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    header: list[str]
    rows: list[list[Cell]]


@dataclass
class Figure:
    image: Image
    caption: str = ""


@dataclass
class Code:
    text: str


@dataclass
class Details:
    """A folded section: a summary line a reader clicks to see the blocks."""
    summary: str
    blocks: list = field(default_factory=list)


Block = Heading | Paragraph | Bullets | Table | Figure | Code | Details


@dataclass
class Document:
    title: str
    blocks: list[Block] = field(default_factory=list)

    def add(self, *blocks: Block) -> None:
        self.blocks.extend(blocks)


# ------------------------------------------------------------------------------------------ Markdown


def _relative(path: Path, folder: Path) -> str:
    return Path(os.path.relpath(path, folder)).as_posix()


def _md_text(text: str) -> str:
    """Text inside a table cell: a pipe would end the cell, a newline the row, `<` open an HTML tag."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace("\n", " ")


def _md_image(image: Image, folder: Path) -> str:
    src = _relative(image.path, folder)
    if image.width:  # GitHub keeps a plain <img> with width; standard Markdown has no size syntax
        return f'<img src="{src}" alt="{html.escape(image.alt)}" width="{image.width}">'
    return f"![{image.alt}]({src})"


def _md_cell(cell: Cell, folder: Path) -> str:
    parts = cell if isinstance(cell, list) else [cell]
    return "<br>".join(_md_image(p, folder) if isinstance(p, Image) else _md_text(p) for p in parts)


def _md_block(block: Block, folder: Path) -> list[str]:
    if isinstance(block, Heading):
        return ["#" * block.level + " " + block.text, ""]
    if isinstance(block, Paragraph):
        return [block.text, ""]
    if isinstance(block, Bullets):
        return [f"- {item}" for item in block.items] + [""]
    if isinstance(block, Table):
        lines = ["| " + " | ".join(_md_text(h) for h in block.header) + " |",
                 "|" + "---|" * len(block.header)]
        lines += ["| " + " | ".join(_md_cell(c, folder) for c in row) + " |" for row in block.rows]
        return lines + [""]
    if isinstance(block, Figure):
        lines = [_md_image(block.image, folder), ""]
        return lines + ([f"*{block.caption}*", ""] if block.caption else [])
    if isinstance(block, Code):
        return ["```", block.text.rstrip("\n"), "```", ""]
    if isinstance(block, Details):
        # GitHub renders <details>; Markdown inside it needs the blank line after <summary>.
        inner = [line for b in block.blocks for line in _md_block(b, folder)]
        return [f"<details><summary>{html.escape(block.summary)}</summary>", "", *inner, "</details>", ""]
    raise TypeError(f"unknown block {type(block).__name__}")


def markdown_table(table: Table, folder: Path = Path(".")) -> str:
    """One table as Markdown text (for reports assembled as text)."""
    return "\n".join(_md_block(table, folder)).strip("\n")


def to_markdown(doc: Document, folder: Path) -> str:
    lines = [f"# {doc.title}", ""]
    for block in doc.blocks:
        lines += _md_block(block, folder)
    return "\n".join(lines).rstrip("\n") + "\n"


# ---------------------------------------------------------------------------------------------- HTML

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1200px; margin: 2em auto; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.6em 0 1.2em; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; vertical-align: top; text-align: left; }
th { background: #f3f3f3; }
td img { image-rendering: pixelated; }
img { max-width: 100%; }
figure { margin: 0.6em 0 1.4em; }
figcaption { font-size: 0.9em; color: #555; font-style: italic; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
code { background: #f3f3f3; padding: 0 3px; }
summary { cursor: pointer; margin: 0.4em 0; }
"""


def _html_inline(text: str) -> str:
    escaped = html.escape(text)
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    escaped = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", escaped)
    return re.sub(r"!?\[([^\]]*)\]\(([^)\s]+)\)", r'<a href="\2">\1</a>', escaped)


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _html_image(image: Image) -> str:
    if not image.path.is_file():
        return f"<em>(missing image {html.escape(image.path.name)})</em>"
    width = f' width="{image.width}"' if image.width else ""
    return f'<img src="{_data_uri(image.path)}" alt="{html.escape(image.alt)}"{width}>'


def _html_cell(cell: Cell) -> str:
    parts = cell if isinstance(cell, list) else [cell]
    return "<br>".join(_html_image(p) if isinstance(p, Image) else html.escape(p) for p in parts)


def _html_block(block: Block) -> str:
    if isinstance(block, Heading):
        return f"<h{block.level}>{html.escape(block.text)}</h{block.level}>"
    if isinstance(block, Paragraph):
        return f"<p>{_html_inline(block.text)}</p>"
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{_html_inline(item)}</li>" for item in block.items) + "</ul>"
    if isinstance(block, Table):
        head = "".join(f"<th>{html.escape(h)}</th>" for h in block.header)
        body = "".join("<tr>" + "".join(f"<td>{_html_cell(c)}</td>" for c in row) + "</tr>" for row in block.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    if isinstance(block, Figure):
        caption = f"<figcaption>{_html_inline(block.caption)}</figcaption>" if block.caption else ""
        return f"<figure>{_html_image(block.image)}{caption}</figure>"
    if isinstance(block, Code):
        return f"<pre>{html.escape(block.text)}</pre>"
    if isinstance(block, Details):
        inner = "\n".join(_html_block(b) for b in block.blocks)
        return f"<details><summary>{html.escape(block.summary)}</summary>\n{inner}\n</details>"
    raise TypeError(f"unknown block {type(block).__name__}")


def to_html(doc: Document) -> str:
    body = "\n".join(_html_block(b) for b in doc.blocks)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(doc.title)}</title>'
            f"<style>{_STYLE}</style></head>\n<body>\n<h1>{html.escape(doc.title)}</h1>\n{body}\n</body></html>\n")


# --------------------------------------------------------------------------------------------- files


def write_text_atomic(text: str, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_document(doc: Document, folder: Path, stem: str = "report") -> tuple[Path, Path]:
    """FOLDER/<stem>.md and FOLDER/<stem>.html; returns both paths."""
    md = write_text_atomic(to_markdown(doc, folder), folder / f"{stem}.md")
    page = write_text_atomic(to_html(doc), folder / f"{stem}.html")
    return md, page


def images_of(blocks: Sequence[Block]) -> list[Path]:
    """Every image path the blocks show (tests check that each exists)."""
    found: list[Path] = []
    for block in blocks:
        if isinstance(block, Figure):
            found.append(block.image.path)
        elif isinstance(block, Table):
            for row in block.rows:
                for cell in row:
                    found += [p.path for p in (cell if isinstance(cell, list) else [cell]) if isinstance(p, Image)]
        elif isinstance(block, Details):
            found += images_of(block.blocks)
    return found
