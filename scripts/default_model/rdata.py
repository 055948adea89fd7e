"""A small reader of R's XDR serialization: enough for the data sets of R packages (character vectors, lists,
data frames), so that their texts can be used without installing R.

read_rdb(path) yields the objects of a lazy-load database (data/Rdata.rdb); read_rda(path) returns the pairlist
of (name, object) saved in an .rda file. Vectors with attributes come back as {"value": [...], "attr": {...}}.
"""
import bz2
import gzip
import lzma
import struct
import zlib

SPECIAL = {254, 253, 252, 251, 250, 249, 248, 247, 246, 242, 241}  # NULL, environments, missing, unbound, ...


class Reader:
    def __init__(self, data):
        self.b, self.p, self.refs = data, 0, []

    def int(self):
        v = struct.unpack_from(">i", self.b, self.p)[0]
        self.p += 4
        return v

    def take(self, n):
        v = self.b[self.p:self.p + n]
        self.p += n
        return v

    def top(self):
        if self.take(2) != b"X\n":
            raise ValueError("not R's XDR serialization")
        version = self.int()
        self.int(), self.int()
        if version == 3:
            self.take(self.int())  # native encoding
        return self.item()

    def item(self):
        flags = self.int()
        kind, has_attr, has_tag = flags & 0xFF, flags & 0x200, flags & 0x400
        if kind in SPECIAL:
            return None
        if kind == 255:  # reference to an earlier symbol or environment
            n = flags >> 8 or self.int()
            return self.refs[n - 1]
        if kind == 1:  # symbol
            sym = ("symbol", self.item())
            self.refs.append(sym)
            return sym
        if kind in (2, 5, 6, 239, 240):  # pairlist, promise, call, attribute lists
            if has_attr:
                self.item()
            tag = self.item() if has_tag else None
            head, rest = self.item(), self.item()
            return [(tag[1] if tag else None, head)] + (rest if isinstance(rest, list) else [])
        if kind == 4:  # environment
            env = {}
            self.refs.append(env)
            self.int()
            for key in ("enclos", "frame", "hashtab", "attr"):
                env[key] = self.item()
            return env
        if kind == 9:  # one string
            n = self.int()
            return None if n == -1 else self.take(n).decode("utf-8", "replace")
        if kind == 238:  # ALTREP (compact sequences, deferred strings): class info, state, attributes
            self.item()
            state = self.item()
            self.item()
            return state
        if kind in (10, 13):
            n = self.int()
            value = list(struct.unpack_from(f">{n}i", self.b, self.p))
            self.p += 4 * n
        elif kind == 14:
            n = self.int()
            value = list(struct.unpack_from(f">{n}d", self.b, self.p))
            self.p += 8 * n
        elif kind in (16, 19, 20):  # character vector, list, expression
            value = [self.item() for _ in range(self.int())]
        elif kind == 24:
            value = self.take(self.int())
        else:
            raise ValueError(f"R type {kind} is not supported (offset {self.p})")
        if has_attr:
            attr = self.item()
            return {"value": value, "attr": dict(attr) if isinstance(attr, list) else {}}
        return value


def read_rdb(path):
    """Objects of a lazy-load database: each is a 4-byte length and a zlib stream, back to back."""
    data = open(path, "rb").read()
    pos = 0
    while pos < len(data):
        size = struct.unpack_from(">i", data, pos)[0]
        z = zlib.decompressobj()
        raw = z.decompress(data[pos + 4:])
        if len(raw) != size:
            raise ValueError(f"{path}: object at {pos} is {len(raw)} bytes, expected {size}")
        pos = len(data) - len(z.unused_data)
        yield Reader(raw).top()


def read_rda(path):
    data = open(path, "rb").read()
    for decompress in (gzip.decompress, bz2.decompress, lzma.decompress):
        try:
            data = decompress(data)
            break
        except (OSError, ValueError, lzma.LZMAError):
            continue
    if data[:5] not in (b"RDX2\n", b"RDX3\n"):
        raise ValueError(f"{path} is not an .rda file")
    return Reader(data[5:]).top()
