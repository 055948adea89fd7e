"""Turns the unpacked Debian packages into the default model's training text (Python standard library only).

    python3 scripts/default_model/extract_texts.py UNPACKED_DIR OUT_DIR [--seed 1234] [--val-fraction 0.03]

UNPACKED_DIR holds one folder per package (dpkg-deb -x); prepare_data.sh makes it. Every source is cut into
paragraphs (markup, notes, headings and verse structure dropped, whitespace normalised), paragraphs are grouped
into documents of at most CHUNK characters, some documents are rendered as chats with the model's chat template
(see chats.py), the documents are shuffled with a fixed seed and split into OUT_DIR/{train,val}.txt, documents
separated by a line "<|endoftext|>". OUT_DIR/sources.json records characters and documents per source.
"""
import gzip
import json
import os
import random
import re
import struct
import sys
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from chats import EOT, about_chats, render_chats  # noqa: E402
from rdata import read_rda, read_rdb  # noqa: E402

CHUNK = 2400  # characters per document, at most (a long paragraph stays whole); ~550 tokens
CAPS = {"tdavid": 4_000_000}  # characters kept of a source (a seeded choice of its documents), for balance

ASCII = {"\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2014": "--",
         "\u2013": "-", "\u00a0": " ", "\ufeff": "", "\u2026": "...", "\u00b7": "", "\u2009": " ", "\u200b": ""}
ASCII_RE = re.compile("|".join(map(re.escape, ASCII)))


def clean(text):
    """One paragraph: ASCII quotes and dashes, _italics_ and {links} unmarked, whitespace collapsed."""
    text = ASCII_RE.sub(lambda m: ASCII[m.group(0)], text)
    text = re.sub(r"_([^_\n]+)_", r"\1", text)
    text = re.sub(r"\{([^{}]*)\}", r"\1", text)
    return re.sub(r"\s+", " ", text).strip()


def chunk(paragraphs, limit=CHUNK):
    """Consecutive paragraphs grouped into documents of at most `limit` characters."""
    docs, cur, size = [], [], 0
    for p in paragraphs:
        if cur and size + len(p) > limit:
            docs.append(cur)
            cur, size = [], 0
        cur.append(p)
        size += len(p) + 2
    if cur:
        docs.append(cur)
    return docs


# ---- line-based books (R character vectors, one element per line) ----

HEADING = re.compile(r"^(chapter|book|part|volume|section|stave|letter)\b[\w .:-]*$", re.I)


def book_paragraphs(lines):
    """Blank-line separated paragraphs of a novel; headings, front matter and Gutenberg notices dropped."""
    text = "\n".join(line or "" for line in lines)
    start, end = text.find("*** START OF"), text.find("*** END OF")
    if start >= 0:
        text = text[text.find("\n", start) + 1:end if end > start else None]
    out = []
    for raw in re.split(r"\n\s*\n", text):
        p = clean(raw)
        if not p or re.search(r"gutenberg|etext|e-text|transcriber", p, re.I):
            continue
        if len(p) < 80 and (HEADING.match(p) or not re.search(r"[a-z]", p)):
            continue  # CHAPTER IV, PRIDE AND PREJUDICE, I., ...
        out.append(p)
    return out


def novels(root):
    """(title, author, paragraphs) for Jane Austen's six novels, Moby Dick and three tidytext books."""
    aus = os.path.join(root, "r-cran-janeaustenr/usr/lib/R/site-library/janeaustenr/data/Rdata.rdb")
    for lines in read_rdb(aus):
        yield lines[0].strip().title(), "Jane Austen", book_paragraphs(lines)
    moby = os.path.join(root, "r-cran-tokenizers/usr/lib/R/site-library/tokenizers/data/Rdata.rdb")
    for obj in read_rdb(moby):
        text = obj["value"][0] if isinstance(obj, dict) else obj[0]
        yield "Moby Dick", "Herman Melville", book_paragraphs(text.split("\n"))
    books = read_rda(os.path.join(root, "r-cran-tidytext/usr/lib/R/site-library/tidytext/extdata/books.rda"))
    frame = dict(books)["books"]
    columns = dict(zip(frame["attr"]["names"], frame["value"]))
    authors = {"The War of the Worlds": "H. G. Wells", "Twenty Thousand Leagues under the Sea": "Jules Verne",
               "Great Expectations": "Charles Dickens"}
    for title, author in authors.items():  # Pride and Prejudice is already in janeaustenr
        lines = [t for t, b in zip(columns["text"], columns["title"]) if b == title]
        yield title, author, book_paragraphs(lines)


# ---- SWORD modules (zText, zCom, zCom4: zlib blocks plus a verse index) ----

def sword_entries(moddir):
    """Every verse (or comment) entry of a SWORD module, in order, each once."""
    for test in ("ot", "nt"):
        for ext, entry in (("bz", 10), ("cz", 12)):  # zText/zCom: u32 block, u32 start, u16 size; zCom4: u32 size
            index = os.path.join(moddir, f"{test}.{ext}v")
            if not os.path.exists(index) or os.path.getsize(index) == 0:
                continue
            blocks = open(os.path.join(moddir, f"{test}.{ext}s"), "rb").read()
            data = open(os.path.join(moddir, f"{test}.{ext}z"), "rb").read()
            verses = open(index, "rb").read()
            cache, seen = {}, set()
            for k in range(len(verses) // entry):
                block, start = struct.unpack_from("<II", verses, k * entry)
                size = struct.unpack_from("<H" if entry == 10 else "<I", verses, k * entry + 8)[0]
                if size == 0 or (block, start) in seen:
                    continue  # empty, or a commentary entry linked to several verses
                seen.add((block, start))
                if block not in cache:
                    off, csize, _ = struct.unpack_from("<III", blocks, 12 * block)
                    cache = {block: zlib.decompress(data[off:off + csize])}
                yield cache[block][start:start + size].decode("utf-8", "replace")


BREAK = "\n\n"
OSIS_DROP = re.compile(r"<(note|title|table)\b[^>]*?(?<!/)>.*?</\1>", re.S)  # footnotes, headings, outlines
OSIS_BREAK = re.compile(r"</?(div|p|lg|lb|list|item)\b[^>]*>")
OSIS_LINE = re.compile(r"</?l\b[^>]*>")  # a line of poetry: joined with spaces
CHAPTER = re.compile(r'<chapter\b[^>]*?osisID="([^"]+)"[^>]*/>')


def osis_text(markup):
    """OSIS markup → text with "\\n\\n" between paragraphs and "\\x00Book.3\\x00" at each chapter start."""
    s = OSIS_DROP.sub(BREAK, markup)
    s = CHAPTER.sub(lambda m: f"{BREAK}\x00{m.group(1)}\x00{BREAK}", s)
    s = re.sub(r"<chapter\b[^>]*>", "", s)
    s = OSIS_LINE.sub(" ", OSIS_BREAK.sub(BREAK, s))
    s = re.sub(r"<[^>]+>", "", s)
    for a, b in (("&lt;", "<"), ("&gt;", ">"), ("&quot;", '"'), ("&apos;", "'"), ("&amp;", "&")):
        s = s.replace(a, b)
    return s


def sword_chapters(moddir, names):
    """(chapter name, paragraphs) of a SWORD module; chapter names like "Psalms 23" from `names`."""
    text = osis_text(" ".join(sword_entries(moddir)))
    chapter, paras = None, []
    parts = re.split(r"\x00([^\x00]*)\x00", text)
    for i, part in enumerate(parts):
        if i % 2 == 1:
            if paras:
                yield chapter, paras
            book, _, num = part.partition(".")
            chapter, paras = f"{names.get(book, book)} {num}".strip(), []
            continue
        for raw in part.split(BREAK):
            p = clean(raw)
            if len(p) > 1 and re.search(r"[a-z]", p):
                paras.append(p)
    if paras:
        yield chapter, paras


def book_names(web_dir):
    """OSIS book id → the name the WEB gives it ("Gen" → "Genesis")."""
    names = {}
    for entry in sword_entries(web_dir):
        for osis_id, name in re.findall(r'osisID="([^".]+)"[^>]*type="book"/>\s*<milestone n="([^"]+)" type="x-usfm-h"', entry):
            names[osis_id] = name
    return names


# ---- dictd dictionaries and the Jargon File (one entry per headword) ----

B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def b64(s):
    n = 0
    for c in s:
        n = n * 64 + B64.index(c)
    return n


def devil_entries(root):
    """(HEADWORD, paragraphs) from The Devil's Dictionary."""
    base = os.path.join(root, "dict-devil/usr/share/dictd/devil")
    data = gzip.open(base + ".dict.dz").read()
    seen = set()
    for line in open(base + ".index", encoding="utf-8").read().splitlines():
        word, off, size = line.split("\t")
        if word.startswith("00") or off in seen:
            continue
        seen.add(off)
        raw = data[b64(off):b64(off) + b64(size)].decode("utf-8", "replace")
        head = re.match(r"\s*([A-Z][A-Z' -]*[A-Z])\s*,", raw)
        paras = [clean(p) for p in re.split(r"\n\s*\n", raw)]
        paras = [p for p in paras if p and not re.fullmatch(r"[A-Z. ]+", p)]  # drop lone signatures like G.J.
        if head and paras:
            yield head.group(1), paras


def jargon_entries(root):
    """(headword, paragraphs) from the Jargon File glossary (":headword: pos." lines start an entry)."""
    text = gzip.open(os.path.join(root, "jargon-text/usr/share/doc/jargon-text/jargon.txt.gz")).read().decode("utf-8")
    text = text[text.find("\n   :"):text.find("\nBibliography")]
    for entry in re.split(r"\n   (?=:[^:\n]+:)", text):
        m = re.match(r":([^:\n]+):", entry)
        if not m:
            continue
        body = entry[m.end():]
        paras = [clean(p) for p in re.split(r"\n\s*\n", body)]
        paras = [p for p in paras if p and not re.search("[\u2500-\u257f]", p)]  # no box-drawn tables
        if paras and re.fullmatch(r"[\w/·.,()' -]*", paras[0]) and len(paras[0]) < 60:
            paras = paras[1:]  # pronunciation and part of speech line
        if paras and sum(map(len, paras)) > 40 and not paras[0].startswith("See "):
            yield m.group(1).strip(), paras


# ---- all sources ----

def sources(root):
    """name → list of documents; a document is a dict with its paragraphs and what a chat may say of it."""
    sw = os.path.join(root, "{0}/usr/share/sword/modules/{1}")
    web = sw.format("sword-text-web", "texts/ztext/engWEB2015eb")
    names = book_names(web)
    out = {"novels": [], "web": [], "mhcc": [], "scofield": [], "tdavid": [], "devil": [], "jargon": []}
    for title, author, paras in novels(root):
        out["novels"] += [{"paras": d, "title": title, "author": author} for d in chunk(paras)]
    for key, package, path in (("web", "sword-text-web", "texts/ztext/engWEB2015eb"),
                               ("mhcc", "sword-comm-mhcc", "comments/zcom/mhcc"),
                               ("scofield", "sword-comm-scofield", "comments/zcom/scofield"),
                               ("tdavid", "sword-comm-tdavid", "comments/zcom/tdavid")):
        for chapter, paras in sword_chapters(sw.format(package, path), names):
            out[key] += [{"paras": d, "chapter": chapter} for d in chunk(paras)]
    out["devil"] = [{"paras": p, "word": w} for w, p in devil_entries(root)]
    out["jargon"] = [{"paras": p, "word": w} for w, p in jargon_entries(root)]
    return out


def main():
    args = sys.argv[1:]
    opts = {"--seed": "1234", "--val-fraction": "0.03"}
    while len(args) > 2:
        opts[args[-2]] = args[-1]
        args = args[:-2]
    root, out_dir = args
    seed, val_fraction = int(opts["--seed"]), float(opts["--val-fraction"])
    rng = random.Random(seed)
    docs, stats = [], {}
    for name, items in sources(root).items():
        if name in CAPS:
            rng.shuffle(items)
            kept, size = [], 0
            for doc in items:
                size += sum(len(p) + 2 for p in doc["paras"])
                if size > CAPS[name]:
                    break
                kept.append(doc)
            items = kept
        texts = render_chats(name, items, rng)
        stats[name] = {"documents": len(texts), "characters": sum(map(len, texts)),
                       "chats": sum(t.startswith("<|im_start|>") for t in texts)}
        docs += texts
    greetings = about_chats(rng)
    stats["about"] = {"documents": len(greetings), "characters": sum(map(len, greetings)), "chats": len(greetings)}
    docs += greetings
    docs.sort()  # independent of dictionary and file-system order before the seeded shuffle
    rng.shuffle(docs)
    n_val = max(1, int(len(docs) * val_fraction))
    os.makedirs(out_dir, exist_ok=True)
    for split, part in (("val", docs[:n_val]), ("train", docs[n_val:])):
        with open(os.path.join(out_dir, f"{split}.txt"), "w", encoding="utf-8") as f:
            f.write(f"\n{EOT}\n".join(part) + "\n")
        stats[f"split_{split}"] = {"documents": len(part), "characters": sum(map(len, part))}
    with open(os.path.join(out_dir, "sources.json"), "w") as f:
        json.dump({"seed": seed, "val_fraction": val_fraction, "chunk_chars": CHUNK, "sources": stats}, f, indent=1)
    for name, s in stats.items():
        print(f"{name:>12}: {s['documents']:7d} documents, {s['characters'] / 1e6:6.2f} M characters"
              + (f", {s['chats']} chats" if "chats" in s else ""))


if __name__ == "__main__":
    main()
