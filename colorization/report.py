"""One self-contained offline HTML page: headings, paragraphs, tables, figures and image galleries.

Images are embedded as ``data:`` URIs (PNG), so the page is one file that opens anywhere without a network
(no external URL, script or style sheet).  Used by ``evaluate --html``, ``vgg_analysis --html`` and
``make demo``.

    rep = Report("Title")
    rep.heading("Results"); rep.table(["", "AuC"], [["model", "89.5"]])
    rep.image(png_bytes_or_path_or_rgb_array, "caption"); rep.gallery([(rgb, "caption"), ...])
    rep.write("out/report.html")
"""
from __future__ import annotations

import base64
import html
import os
from pathlib import Path

import numpy as np

STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 3px 8px; text-align: right; }
th { background: #eee; } td:first-child, th:first-child { text-align: left; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
figcaption { font-size: 0.8em; max-width: 100%; }
img { max-width: 100%; image-rendering: auto; }
pre { background: #f6f6f6; padding: 0.6em; overflow-x: auto; font-size: 0.85em; }
.note { color: #555; font-style: italic; }
"""


def png_bytes(image) -> bytes:
    """PNG bytes of ``image``: PNG bytes (returned as they are), a path to a PNG/JPEG file, or an RGB (or
    gray) uint8 array."""
    if isinstance(image, (bytes, bytearray)):
        return bytes(image)
    if isinstance(image, (str, os.PathLike)):
        return Path(image).read_bytes()
    import cv2

    arr = np.asarray(image)
    if arr.dtype != np.uint8:
        arr = (255 * np.clip(arr, 0, 1) + 0.5).astype(np.uint8)
    if arr.ndim == 3:
        arr = arr[..., ::-1]
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(arr))
    if not ok:
        raise ValueError("report: cannot encode the image as PNG")
    return buf.tobytes()


def data_uri(image) -> str:
    data = png_bytes(image)
    mime = "image/jpeg" if data[:3] == b"\xff\xd8\xff" else "image/png"
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


class Report:
    """An HTML page built section by section (every text is escaped)."""

    def __init__(self, title: str):
        self.title = title
        self.parts: list[str] = [f"<h1>{html.escape(title)}</h1>"]

    def heading(self, text: str) -> None:
        self.parts.append(f"<h2>{html.escape(text)}</h2>")

    def paragraph(self, text: str, note: bool = False) -> None:
        cls = ' class="note"' if note else ""
        self.parts.append(f"<p{cls}>{html.escape(text)}</p>")

    def preformatted(self, text: str) -> None:
        self.parts.append(f"<pre>{html.escape(text)}</pre>")

    def table(self, header, rows) -> None:
        out = ["<table>", "<thead><tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
               + "</tr></thead>", "<tbody>"]
        for row in rows:
            out.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>")
        out.append("</tbody></table>")
        self.parts.append("\n".join(out))

    def image(self, image, caption: str = "", width: int | None = None) -> None:
        style = f' style="width:{int(width)}px"' if width else ""
        self.parts.append(f'<figure><img src="{data_uri(image)}" alt="{html.escape(caption, quote=True)}"{style}>'
                          f"<figcaption>{html.escape(caption)}</figcaption></figure>")

    def gallery(self, items, width: int | None = None) -> None:
        """A row of figures: ``items`` = [(image, caption), ...]."""
        self.parts.append("<div>")
        for image, caption in items:
            self.image(image, caption, width)
        self.parts.append("</div>")

    def html(self) -> str:
        body = "\n".join(self.parts)
        return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                f"<title>{html.escape(self.title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}\n"
                "</body>\n</html>\n")

    def write(self, path) -> Path:
        """Write the page atomically; returns its path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(self.html(), encoding="utf-8")
        os.replace(tmp, path)
        return path


VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


def check_html(text: str) -> list:
    """Problems found by a strict parse (stdlib ``html.parser``): unbalanced or misnested tags, a missing
    doctype/title, references to anything outside the page (http(s) URLs, ``src`` that is not a data URI).
    An empty list means the page is well formed and offline."""
    from html.parser import HTMLParser

    problems = []

    class Checker(HTMLParser):
        def __init__(self):
            super().__init__(convert_charrefs=True)
            self.stack = []
            self.doctype = False
            self.title = False

        def handle_decl(self, decl):
            self.doctype = self.doctype or decl.lower() == "doctype html"

        def handle_starttag(self, tag, attrs):
            if tag == "title":
                self.title = True
            for name, value in attrs:
                if name in ("src", "href") and value and not value.startswith("data:") and not value.startswith("#"):
                    problems.append(f"<{tag}> {name} points outside the page: {value[:60]}")
            if tag not in VOID:
                self.stack.append((tag, self.getpos()))

        def handle_startendtag(self, tag, attrs):
            self.handle_starttag(tag, attrs)
            if tag not in VOID:
                self.stack.pop()

        def handle_endtag(self, tag):
            if tag in VOID:
                problems.append(f"line {self.getpos()[0]}: end tag for the void element <{tag}>")
            elif not self.stack or self.stack[-1][0] != tag:
                problems.append(f"line {self.getpos()[0]}: </{tag}> does not close "
                                f"{'<' + self.stack[-1][0] + '>' if self.stack else 'anything'}")
            else:
                self.stack.pop()

    c = Checker()
    c.feed(text)
    c.close()
    if not c.doctype:
        problems.append("no <!DOCTYPE html>")
    if not c.title:
        problems.append("no <title>")
    problems += [f"line {pos[0]}: <{tag}> is never closed" for tag, pos in c.stack]
    if "http://" in text or "https://" in text:
        problems.append("an http(s) URL in the page")
    return problems
