#!/usr/bin/env python3
"""Builds the demo model's training corpus from two Debian packages.

The corpus is seven public-domain novels (Project Gutenberg texts) that Debian ships as
datasets of R packages:

  r-cran-janeaustenr 1.0.0-1  (MIT)  Jane Austen's six novels, one string per printed line
  r-cran-tokenizers  0.3.0-1  (MIT)  Herman Melville's "Moby Dick", one string

The packages are fetched with `apt-get download` (or taken from --debs DIR), checked
against the SHA-256 sums below, unpacked with `dpkg-deb -x`, and their lazy-load databases
decoded with rdata.py (no R needed). Each book is cleaned the same way: Gutenberg licence
text cut off, hard-wrapped lines joined into paragraphs, paragraphs separated by one blank
line, underscores (italics markers) removed, whitespace runs squeezed.

Output (OUT, default tools/train_demo/corpus/, git-ignored):
  train.txt      the training split: every book but its last ~2%, books separated by
                 the line "<|endoftext|>"
  heldout.txt    the last ~2% of every book (whole paragraphs), same separator
  manifest.json  packages, versions, sums, files used, licences, per-book sizes

The split is made here, once, so the tokenizer, the training script and the exactness
check all see the same held-out text. The GPU machine has no network: copy OUT there.

    python3 tools/train_demo/prepare_corpus.py [--debs DIR] [--out DIR]
"""
import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rdata  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SEPARATOR = "<|endoftext|>"
HELDOUT_FRACTION = 0.02

PACKAGES = [
    {
        "package": "r-cran-janeaustenr",
        "version": "1.0.0-1",
        "deb": "r-cran-janeaustenr_1.0.0-1_all.deb",
        "sha256": "df6bddf211906d1ff404f8ff662c21b34e6660e7f54a311084e749050c019c95",
        "file": "usr/lib/R/site-library/janeaustenr/data/Rdata",
        "licence": "MIT (package); the novels are public domain (Project Gutenberg texts)",
    },
    {
        "package": "r-cran-tokenizers",
        "version": "0.3.0-1",
        "deb": "r-cran-tokenizers_0.3.0-1_amd64.deb",
        "sha256": "6312f013ebfde5650235bfd7ba5c44d9e4cf9f2da9855337c9483fe778f0d8c7",
        "file": "usr/lib/R/site-library/tokenizers/data/Rdata",
        "licence": "MIT (package); the novel is public domain (Project Gutenberg EBook #2701)",
    },
]

# (package, R variable, title, author), in corpus order.
BOOKS = [
    ("r-cran-janeaustenr", "sensesensibility", "Sense and Sensibility", "Jane Austen"),
    ("r-cran-janeaustenr", "prideprejudice", "Pride and Prejudice", "Jane Austen"),
    ("r-cran-janeaustenr", "mansfieldpark", "Mansfield Park", "Jane Austen"),
    ("r-cran-janeaustenr", "emma", "Emma", "Jane Austen"),
    ("r-cran-janeaustenr", "northangerabbey", "Northanger Abbey", "Jane Austen"),
    ("r-cran-janeaustenr", "persuasion", "Persuasion", "Jane Austen"),
    ("r-cran-tokenizers", "mobydick", "Moby Dick", "Herman Melville"),
]


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_debs(debs_dir):
    os.makedirs(debs_dir, exist_ok=True)
    for p in PACKAGES:
        path = os.path.join(debs_dir, p["deb"])
        if not os.path.exists(path):
            print(f"apt-get download {p['package']}={p['version']}", flush=True)
            subprocess.run(["apt-get", "download", f"{p['package']}={p['version']}"], cwd=debs_dir, check=True)
        got = sha256(path)
        if got != p["sha256"]:
            raise SystemExit(f"{path}: sha256 {got}, expected {p['sha256']}")


def paragraphs(text):
    """Hard-wrapped lines -> paragraphs (blank lines separate them)."""
    out = []
    for block in re.split(r"\n\s*\n", text):
        words = block.replace("_", "").split()
        if words:
            out.append(" ".join(words))
    return out


def moby_dick_body(text):
    """The novel between the Gutenberg header and footer, from its first chapter."""
    text = text.lstrip("\ufeff").replace("\r\n", "\n")
    start = text.index("\nCHAPTER 1. Loomings.")
    end = text.index("End of Project Gutenberg's Moby Dick")
    return "MOBY DICK; OR THE WHALE\n\nBy Herman Melville\n\n" + text[start:end]


def book_text(obj, variable):
    if obj.kind != "character":
        raise SystemExit(f"{variable}: expected a character vector, got {obj.kind}")
    if variable == "mobydick":
        return moby_dick_body(obj.value[0])
    return "\n".join(line if line is not None else "" for line in obj.value)


def split_heldout(paras):
    """Last paragraphs of a book, at least HELDOUT_FRACTION of its characters."""
    total = sum(len(p) + 2 for p in paras)
    held, size = 0, 0
    while size < HELDOUT_FRACTION * total:
        held += 1
        size += len(paras[-held]) + 2
    return paras[:-held], paras[-held:]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--debs", help="directory with the .deb files (downloaded there if missing)")
    ap.add_argument("--out", default=os.path.join(HERE, "corpus"))
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        debs_dir = args.debs or os.path.join(tmp, "debs")
        fetch_debs(debs_dir)
        data = {}
        for p in PACKAGES:
            root = os.path.join(tmp, p["package"])
            subprocess.run(["dpkg-deb", "-x", os.path.join(debs_dir, p["deb"]), root], check=True)
            data[p["package"]] = rdata.read_lazyload_db(os.path.join(root, p["file"]))

    train, heldout, books = [], [], []
    for package, variable, title, author in BOOKS:
        paras = paragraphs(book_text(data[package][variable], variable))
        tr, ho = split_heldout(paras)
        train.append("\n\n".join(tr))
        heldout.append("\n\n".join(ho))
        books.append({"title": title, "author": author, "package": package, "variable": variable,
                      "paragraphs": len(paras), "train_chars": len(train[-1]), "heldout_chars": len(heldout[-1]),
                      "heldout_starts": ho[0][:80]})
        print(f"{title:24s} {len(paras):6d} paragraphs  train {len(train[-1]):8d} chars  "
              f"held-out {len(heldout[-1]):6d} chars", flush=True)

    os.makedirs(args.out, exist_ok=True)
    joiner = "\n" + SEPARATOR + "\n"
    for name, parts in (("train.txt", train), ("heldout.txt", heldout)):
        with open(os.path.join(args.out, name), "w", encoding="utf-8", newline="\n") as f:
            f.write(joiner.join(parts) + "\n")
    manifest = {
        "packages": [{k: p[k] for k in ("package", "version", "deb", "sha256", "file", "licence")} for p in PACKAGES],
        "books": books,
        "separator": SEPARATOR,
        "heldout_fraction": HELDOUT_FRACTION,
        "files": {name: sha256(os.path.join(args.out, name)) for name in ("train.txt", "heldout.txt")},
    }
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    print(f"wrote {args.out}: train.txt {sum(map(len, train))} chars, heldout.txt {sum(map(len, heldout))} chars")


if __name__ == "__main__":
    main()
