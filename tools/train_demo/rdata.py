"""Minimal reader for the data of an installed R package (its lazy-load database).

An installed R package keeps its datasets in data/Rdata.rdx (a compressed, serialised
index: variable name -> [offset, length] into Rdata.rdb) and data/Rdata.rdb (the
objects, each one an R serialisation in XDR format, compressed).  This module decodes
just enough of R's serialisation format for the text datasets we use (character
vectors, lists, data frames of them); anything else raises.
"""

import bz2
import gzip
import lzma
import struct
import zlib

# SEXP types (R internals, "Serialization Formats")
NILSXP, SYMSXP, LISTSXP, CLOSXP, ENVSXP, PROMSXP, LANGSXP = 0, 1, 2, 3, 4, 5, 6
CHARSXP, LGLSXP, INTSXP, REALSXP, CPLXSXP, STRSXP = 9, 10, 13, 14, 15, 16
VECSXP, EXPRSXP, RAWSXP = 19, 20, 24
REFSXP, NILVALUE_SXP, GLOBALENV_SXP, UNBOUNDVALUE_SXP = 255, 254, 253, 252
MISSINGARG_SXP, BASENAMESPACE_SXP, EMPTYENV_SXP, BASEENV_SXP = 251, 250, 242, 241
ALTREP_SXP, ATTRLISTSXP, ATTRLANGSXP = 238, 239, 240


class RObject:
    """A decoded R value: its type, payload and attributes (dict)."""

    def __init__(self, kind, value, attributes=None):
        self.kind = kind
        self.value = value
        self.attributes = attributes or {}

    def __repr__(self):
        return f"RObject({self.kind}, {type(self.value).__name__}, attrs={list(self.attributes)})"


class _Reader:
    def __init__(self, data):
        self.data = data
        self.pos = 0
        self.refs = []

    def take(self, n):
        if self.pos + n > len(self.data):
            raise ValueError("R serialisation: unexpected end of data")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def int(self):
        return struct.unpack(">i", self.take(4))[0]

    def length(self):
        n = self.int()
        if n == -1:
            hi, lo = self.int(), self.int()
            n = (hi << 32) | (lo & 0xFFFFFFFF)
        return n

    def header(self):
        fmt = self.take(2)
        if fmt != b"X\n":
            raise ValueError(f"R serialisation: only the XDR format is supported, got {fmt!r}")
        version = self.int()
        self.int()  # writer's R version
        self.int()  # minimal R version
        if version == 3:
            self.take(self.int())  # native encoding name
        elif version != 2:
            raise ValueError(f"R serialisation: unknown version {version}")

    def pairlist_to_dict(self, obj):
        out = {}
        while obj is not None:
            tag, car, obj = obj
            out[tag] = car
        return out

    def item(self):
        flags = self.int()
        kind = flags & 0xFF
        has_attr = bool(flags & (1 << 9))
        has_tag = bool(flags & (1 << 10))

        if kind == NILVALUE_SXP:
            return None
        if kind in (EMPTYENV_SXP, BASEENV_SXP, GLOBALENV_SXP, UNBOUNDVALUE_SXP,
                    MISSINGARG_SXP, BASENAMESPACE_SXP):
            return RObject("special", kind)
        if kind == REFSXP:
            index = flags >> 8
            if index == 0:
                index = self.int()
            return self.refs[index - 1]
        if kind == SYMSXP:
            name = self.item()  # a CHARSXP
            sym = RObject("symbol", name)
            self.refs.append(sym)
            return sym
        if kind == ENVSXP:
            self.int()  # locked
            env = RObject("environment", None)
            self.refs.append(env)
            enclos, frame, hashtab, attrib = self.item(), self.item(), self.item(), self.item()
            env.value = (enclos, frame, hashtab)
            return env
        if kind in (LISTSXP, LANGSXP, CLOSXP, PROMSXP, ATTRLISTSXP, ATTRLANGSXP):
            # A pairlist, read iteratively along the cdr chain: (tag, car, rest).
            head = None
            cells = []
            while True:
                attributes = self.item() if has_attr else None
                tag = self.item() if has_tag else None
                car = self.item()
                tag_name = tag.value if isinstance(tag, RObject) and tag.kind == "symbol" else None
                cells.append((tag_name, car))
                nxt = self.int()
                nkind = nxt & 0xFF
                if nkind in (LISTSXP, ATTRLISTSXP) and kind in (LISTSXP, ATTRLISTSXP):
                    has_attr = bool(nxt & (1 << 9))
                    has_tag = bool(nxt & (1 << 10))
                    continue
                # Not a plain continuation: rewind and read the cdr as an item.
                self.pos -= 4
                rest = self.item()
                break
            for tag_name, car in reversed(cells):
                rest = (tag_name, car, rest)
            head = rest
            return head if kind in (LISTSXP, ATTRLISTSXP) else RObject("language", head)
        if kind == CHARSXP:
            n = self.int()
            if n == -1:
                return None  # NA_character_
            return self.take(n).decode("utf-8")
        if kind in (LGLSXP, INTSXP):
            n = self.length()
            value = list(struct.unpack(f">{n}i", self.take(4 * n)))
        elif kind == REALSXP:
            n = self.length()
            value = list(struct.unpack(f">{n}d", self.take(8 * n)))
        elif kind == STRSXP:
            n = self.length()
            value = [self.item() for _ in range(n)]
        elif kind in (VECSXP, EXPRSXP):
            n = self.length()
            value = [self.item() for _ in range(n)]
        elif kind == RAWSXP:
            value = self.take(self.length())
        else:
            raise ValueError(f"R serialisation: SEXP type {kind} is not supported")
        attributes = self.pairlist_to_dict(self.item()) if has_attr else {}
        names = {LGLSXP: "logical", INTSXP: "integer", REALSXP: "double", STRSXP: "character",
                 VECSXP: "list", EXPRSXP: "expression", RAWSXP: "raw"}
        return RObject(names[kind], value, attributes)


def unserialize(data):
    reader = _Reader(data)
    reader.header()
    return reader.item()


def _decompress(blob):
    """One lazy-load record: 4-byte big-endian length, then zlib, or a type byte then
    bzip2 ('2'), xz ('Z') or nothing ('0')."""
    (size,) = struct.unpack(">I", blob[:4])
    body = blob[4:]
    if body[:1] in (b"2", b"Z", b"0") and not body.startswith(b"\x78"):
        kind, body = body[:1], body[1:]
        out = {b"2": bz2.decompress, b"Z": lzma.decompress, b"0": bytes}[kind](body)
    else:
        out = zlib.decompress(body)
    if len(out) != size:
        raise ValueError(f"lazy-load record: expected {size} bytes, got {len(out)}")
    return out


def read_lazyload_db(prefix):
    """{variable name: RObject} for the lazy-load database PREFIX.rdx / PREFIX.rdb."""
    with open(prefix + ".rdx", "rb") as f:
        raw = f.read()
    # The index is written by saveRDS: a gzip file (older R: a lazy-load record).
    index = unserialize(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else _decompress(raw))
    with open(prefix + ".rdb", "rb") as f:
        db = f.read()
    names = index.value[index.attributes["names"].value.index("variables")]
    out = {}
    for name, entry in zip(names.attributes["names"].value, names.value):
        offset, length = (int(x) for x in entry.value)
        out[name] = unserialize(_decompress(db[offset:offset + length]))
    return out
