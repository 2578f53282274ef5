#!/usr/bin/env python3
"""Turns documentation files into plain UTF-8 text for scripts/fetch-corpus-large.sh.

    corpus_text.py KIND SRC_ROOT OUT_DIR < list of paths relative to SRC_ROOT (one a line)
    corpus_text.py --self-test

Writes OUT_DIR/<path with '/' -> '__'>.txt for each input that yields at least MIN_CHARS of
text, one document per file. KIND says how to read a file:
  html   tags stripped; <script>, <style>, <nav>, <head> and elements that are only site
         chrome (sidebars, headers, footers, search boxes) dropped; block elements become
         line breaks, <pre> keeps its lines
  page   GNOME Mallard .page XML: the same as html (its markup is tags with text in them)
  plain  the file as it is (.gz files are decompressed)
  info   GNU info: the file as it is, less the \\x1f node separators and the tag table
Only the Python standard library is used. Output is a pure function of the input bytes
(sorted input order, no time stamps), so the same packages give the same corpus.
"""
import gzip
import html.parser
import os
import re
import sys

MIN_CHARS = 200  # shorter pages are indexes, redirects and stubs: no prose to learn from

# Elements whose content is never prose (site chrome, scripts, navigation).
SKIP_TAGS = {"script", "style", "head", "nav", "noscript", "svg", "button", "select",
             "form", "template", "iframe", "object", "math"}
# class/id words of containers that hold navigation rather than content, in the themes
# these packages use (Sphinx, rustdoc/mdBook, javadoc, DocBook, Doxygen, texinfo HTML).
CHROME_RE = re.compile(
    r"(^|[\s_-])(sphinxsidebar|related|navbar|navigation|nav-bar|top-nav|sub-nav|"
    r"breadcrumbs?|footer|headerlink|search|toc-wrapper|sidebar-elems|"
    r"navheader|navfooter|menu-bar|skip-nav|legalnotice|flex-menu)($|[\s_-])", re.I)
BLOCK_TAGS = {"p", "div", "br", "li", "ul", "ol", "dl", "dt", "dd", "tr", "table", "pre",
              "h1", "h2", "h3", "h4", "h5", "h6", "section", "article", "blockquote",
              "main", "header", "footer", "hr", "title", "figcaption", "caption",
              "td", "th", "summary", "details"}
# Mallard elements that end a line (its other elements are inline).
PAGE_BLOCK_TAGS = {"title", "desc", "p", "item", "note", "code", "screen", "tr", "td",
                   "section", "list", "steps", "terms", "table", "listing", "example"}
VOID_TAGS = {"br", "hr", "img", "meta", "link", "input", "area", "base", "col", "embed",
             "source", "track", "wbr", "param"}


class TextExtractor(html.parser.HTMLParser):
    def __init__(self, block_tags):
        super().__init__(convert_charrefs=True)
        self.block_tags = block_tags
        self.parts = []
        self.stack = []  # (tag, skips) for open elements
        self.skip_depth = 0
        self.pre_depth = 0

    def handle_starttag(self, tag, attrs):
        if tag in VOID_TAGS:
            if tag in ("br", "hr") and not self.skip_depth:
                self.parts.append("\n")
            return
        attrs = dict(attrs)
        skips = tag in SKIP_TAGS or bool(
            CHROME_RE.search((attrs.get("class") or "") + " " + (attrs.get("id") or ""))
            or attrs.get("role") in ("navigation", "search", "banner", "contentinfo")
            or attrs.get("hidden") is not None)
        self.stack.append((tag, skips))
        if skips:
            self.skip_depth += 1
        if tag == "pre":
            self.pre_depth += 1
        if tag in self.block_tags and not self.skip_depth:
            self.parts.append("\n")

    def handle_endtag(self, tag):
        if tag in VOID_TAGS:
            return
        # Close up to the matching element: HTML often leaves <p> and <li> unclosed.
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                for t, skips in self.stack[i:]:
                    if skips:
                        self.skip_depth -= 1
                    if t == "pre":
                        self.pre_depth -= 1
                del self.stack[i:]
                break
        if tag in self.block_tags and not self.skip_depth:
            self.parts.append("\n")

    def handle_data(self, data):
        if self.skip_depth:
            return
        if self.pre_depth:
            self.parts.append(data)
        else:
            self.parts.append(re.sub(r"\s+", " ", data))

    def text(self):
        lines = [line.rstrip() for line in "".join(self.parts).split("\n")]
        out, blank = [], False
        for line in lines:
            if not line.strip():
                blank = bool(out)
                continue
            if blank:
                out.append("")
            blank = False
            out.append(line if self.pre_depth or line.startswith("  ") else line.strip())
        return "\n".join(out) + "\n"


def read_bytes(path):
    with open(path, "rb") as f:
        data = f.read()
    return gzip.decompress(data) if path.endswith(".gz") else data


def clean(text):
    # NUL (which `hydra data prepare` refuses) and the other C0 controls but TAB, LF and FF
    # are removed; so is CR.
    return re.sub(r"[\x00-\x08\x0b\x0d-\x1f\x7f]", "", text.replace("\r\n", "\n"))


def convert(kind, data):
    # Invalid UTF-8 bytes are dropped, as `iconv -c` does in fetch-corpus.sh.
    text = data.decode("utf-8", errors="ignore")
    if kind in ("html", "page"):
        parser = TextExtractor(BLOCK_TAGS if kind == "html" else PAGE_BLOCK_TAGS | BLOCK_TAGS)
        parser.feed(text)
        parser.close()
        text = parser.text()
    elif kind == "info":
        text = text.split("\x1f\nTag Table:")[0]  # the tag table is byte offsets
    return clean(text)


def self_test():
    """Checks the conversions on small inputs (tests/data: DataCorpusTextSelfTest)."""
    page = ('<html><head><title>T</title><script>var x = 1;</script></head><body>'
            '<nav>Home | Next</nav><div class="sphinxsidebar">Search</div>'
            '<h1>Heading</h1><p>One &amp; two<br>three</p><p>Unclosed<li>item'
            '<pre>  code\n    indented</pre><div class="footer">(c) site</div></body></html>')
    got = convert("html", page.encode())
    want = "Heading\n\nOne & two\nthree\n\nUnclosed\nitem\n  code\n    indented\n"
    assert got == want, f"html: {got!r} != {want!r}"
    mallard = '<page xmlns="http://projectmallard.org/1.0/"><title>Wi-Fi</title><p>Connect <gui>now</gui>.</p></page>'
    got = convert("page", mallard.encode())
    assert got == "Wi-Fi\n\nConnect now.\n", f"page: {got!r}"
    info = b"Node\x1f\nFile: a.info\nText\xff\x00 here\n\x1f\nTag Table:\nNode: x\x7f12\n"
    got = convert("info", info)
    assert got == "Node\nFile: a.info\nText here\n", f"info: {got!r}"
    assert convert("plain", b"a\r\nb\x01\n") == "a\nb\n"
    print("corpus_text: self-test passed")


def main():
    if sys.argv[1:] == ["--self-test"]:
        return self_test()
    kind, src_root, out_dir = sys.argv[1:4]
    if kind not in ("html", "page", "plain", "info"):
        sys.exit(f"corpus_text.py: unknown kind {kind!r}")
    os.makedirs(out_dir, exist_ok=True)
    paths = sorted(line.rstrip("\n") for line in sys.stdin if line.strip())
    for rel in paths:
        path = os.path.join(src_root, rel)
        if not os.path.isfile(path):  # a directory named like a page, a dangling link
            continue
        text = convert(kind, read_bytes(path))
        if len(text.strip()) < MIN_CHARS:
            continue
        name = re.sub(r"\.gz$", "", rel).replace("/", "__")
        name = re.sub(r"[^A-Za-z0-9._+-]", "_", name)
        with open(os.path.join(out_dir, name + ".txt"), "w", encoding="utf-8") as f:
            f.write(text)


if __name__ == "__main__":
    main()
