"""One report, two renderings: ``report.md`` (links the table and figure files beside it) and
``report.html``, whose figures are embedded: the MLflow UI shows an HTML artifact in a frame
of its own, where links relative to the file do not resolve."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from analysis.tables import Table, markdown, write_table

_STYLE = """
body { font-family: sans-serif; max-width: 70em; margin: 2em auto; line-height: 1.4; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: left; }
th { background: #eee; }
.warning { background: #fff3cd; border-left: 4px solid #e0a800; padding: 0.4em 0.8em; }
img { max-width: 100%; }
.note { color: #555; font-size: 0.9em; }
"""


@dataclass
class Document:
    title: str
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def heading(self, text: str) -> None:
        self.blocks.append(("heading", text))

    def paragraph(self, text: str) -> None:
        self.blocks.append(("paragraph", text))

    def warning(self, text: str) -> None:
        self.blocks.append(("warning", text))

    def bullets(self, items: list[str]) -> None:
        self.blocks.append(("bullets", items))

    def table(self, table: Table, out_dir: Path, inline: bool = True) -> None:
        """Writes the table's files too (CSV, Markdown, LaTeX) next to the report; a long
        table (``inline=False``) is only linked, so that the report stays short."""
        write_table(table, out_dir)
        self.blocks.append(("table" if inline else "linked", table))

    def figure(self, paths: list[Path], caption: str) -> None:
        self.blocks.append(("figure", (paths, caption)))


def write(doc: Document, out_dir: Path) -> tuple[Path, Path]:
    md, page = out_dir / "report.md", out_dir / "report.html"
    md.write_text(to_markdown(doc))
    page.write_text(to_html(doc))
    return md, page


def to_markdown(doc: Document) -> str:
    lines = [f"# {doc.title}", ""]
    for kind, value in doc.blocks:
        if kind == "heading":
            lines += [f"## {value}", ""]
        elif kind == "paragraph":
            lines += [value, ""]
        elif kind == "warning":
            lines += [f"> **Note:** {value}", ""]
        elif kind == "bullets":
            lines += [f"- {item}" for item in value] + [""]
        elif kind == "table":
            lines += [f"### {value.title}", "", markdown(value.display), ""]
            if value.note:
                lines += [f"*{value.note}*", ""]
            lines += [_files(value.stem, ("csv", "md", "tex")), ""]
        elif kind == "linked":
            lines += [f"{value.title} ({len(value.display)} rows): " + _files(value.stem, ("csv", "md", "tex")), ""]
        elif kind == "figure":
            paths, caption = value
            lines += [f"### {caption}", "", f"![{caption}]({paths[0].name})", "", f"PDF: [{paths[1].name}]({paths[1].name})", ""]
    return "\n".join(lines)


def _files(stem: str, suffixes: tuple[str, ...]) -> str:
    return "Files: " + ", ".join(f"[{stem}.{s}]({stem}.{s})" for s in suffixes)


def to_html(doc: Document) -> str:
    esc = html.escape
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{esc(doc.title)}</title>"
             f"<style>{_STYLE}</style></head><body><h1>{esc(doc.title)}</h1>"]
    for kind, value in doc.blocks:
        if kind == "heading":
            parts.append(f"<h2>{esc(value)}</h2>")
        elif kind == "paragraph":
            parts.append(f"<p>{esc(value)}</p>")
        elif kind == "warning":
            parts.append(f"<p class='warning'>{esc(value)}</p>")
        elif kind == "bullets":
            parts.append("<ul>" + "".join(f"<li>{esc(item)}</li>" for item in value) + "</ul>")
        elif kind == "table":
            parts.append(f"<h3>{esc(value.title)}</h3>")
            parts.append(value.display.to_html(index=False, escape=True, border=0) if not value.display.empty
                         else "<p>(none)</p>")
            if value.note:
                parts.append(f"<p class='note'>{esc(value.note)}</p>")
            links = ", ".join(f"<a href='{esc(value.stem)}.{s}'>{esc(value.stem)}.{s}</a>" for s in ("csv", "md", "tex"))
            parts.append(f"<p class='note'>Files: {links}</p>")
        elif kind == "linked":
            links = ", ".join(f"<a href='{esc(value.stem)}.{s}'>{esc(value.stem)}.{s}</a>" for s in ("csv", "md", "tex"))
            parts.append(f"<p>{esc(value.title)} ({len(value.display)} rows): {links}</p>")
        elif kind == "figure":
            paths, caption = value
            data = base64.b64encode(paths[0].read_bytes()).decode("ascii")
            parts.append(f"<h3>{esc(caption)}</h3><img src='data:image/png;base64,{data}' alt='{esc(caption)}'>"
                         f"<p class='note'>PDF: <a href='{esc(paths[1].name)}'>{esc(paths[1].name)}</a></p>")
    parts.append("</body></html>")
    return "\n".join(parts)
