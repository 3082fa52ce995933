"""`scaling data prepare SOURCE --out DIR`: tokenize a corpus into memmap shards and a manifest."""

from __future__ import annotations

import argparse
import time

from scaling.data import corpora
from scaling.data.shards import prepare
from scaling.data.tokenizers import DEFAULT_TOKENIZER, TOKENIZER_HELP


def register(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="prepare token shards from a corpus")
    sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    p = sub.add_parser(
        "prepare",
        help="tokenize SOURCE into train/val shards",
        description="Tokenize SOURCE into DIR/{train,val}.bin, manifest.json (and tokenizer.json).",
    )
    p.add_argument("source", metavar="SOURCE", help=corpora.SOURCE_HELP)
    p.add_argument("--out", required=True, metavar="DIR", help="folder to create")
    p.add_argument("--tokenizer", default=DEFAULT_TOKENIZER, help=TOKENIZER_HELP)
    p.add_argument(
        "--val-fraction",
        type=float,
        default=corpora.DEFAULT_VAL_FRACTION,
        help="share of the corpus held out for validation, by document (default %(default)s)",
    )
    p.add_argument(
        "--suffixes",
        default=",".join(corpora.DEFAULT_SUFFIXES),
        help="file suffixes read from a text: folder (default %(default)s)",
    )
    p.add_argument("--max-bytes", type=int, default=None, help="read at most about this many bytes")
    p.add_argument("--max-files", type=int, default=None, help="read at most this many files")
    p.add_argument("--force", action="store_true", help="replace DIR if it holds a dataset")
    p.set_defaults(func=run_prepare)


def run_prepare(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    suffixes = tuple(s.strip() for s in args.suffixes.split(",") if s.strip())
    m = prepare(
        args.source,
        args.out,
        args.tokenizer,
        val_fraction=args.val_fraction,
        suffixes=suffixes,
        max_bytes=args.max_bytes,
        max_files=args.max_files,
        overwrite=args.force,
    )
    extra = f", entropy rate {m.entropy_rate:.4f} nats" if m.entropy_rate is not None else ""
    print(
        f"prepared {m.source} -> {args.out}: train {m.tokens['train']:,} tokens "
        f"({m.documents['train']} docs), val {m.tokens['val']:,} tokens "
        f"({m.documents['val']} docs), vocab {m.vocab_size} ({m.tokenizer}), unigram entropy "
        f"{m.unigram_entropy:.4f} nats{extra}, {time.perf_counter() - t0:.1f} s"
    )
    return 0
