"""``sparrow embed DIR (--text T ... | --file F) --out E.npy``: sentence embeddings of a compressed MiniLM.

DIR is a directory written by ``sparrow compress --model minilm --out DIR``
(docs/format.md, "The compressed MiniLM directory"), or the word
``original`` for the bundled all-MiniLM-L6-v2, for comparison (the word always
means the bundled model: write ``./original`` for a directory of that name).
The sentences are the ``--text`` arguments, or the lines of the UTF-8 file F
(blank lines skipped).  E is float32 [N, 384], one unit-length row per
sentence in order, written atomically.  Runs offline on the CPU.

A missing DIR, a directory that is not a compressed MiniLM, an empty or
unreadable sentences file or an --out that is a directory is one line, exit
status 1, and nothing is written.
"""

from pathlib import Path


def configure(parser):
    parser.add_argument("model", metavar="DIR",
                        help="compressed MiniLM directory (sparrow compress --model minilm), "
                             "or 'original' for the bundled all-MiniLM-L6-v2")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", nargs="+", action="extend", metavar="T", help="sentences to embed (repeatable)")
    src.add_argument("--file", metavar="F", help="UTF-8 text file, one sentence per line (blank lines skipped)")
    parser.add_argument("--out", required=True, metavar="E.npy", help="where to write float32 [N, 384] embeddings")
    parser.add_argument("--batch-size", type=int, default=32, metavar="B", help="sentences per forward pass")


def _sentences(args):
    """The sentences to embed, in order; SparrowError (one line) when there are none or F is unreadable."""
    from sparrow import SparrowError
    if args.text is not None:
        texts = [t.strip() for t in args.text]
        if not all(texts):
            raise SparrowError("--text: empty sentence")
        return texts
    path = Path(args.file)
    if not path.is_file():
        raise SparrowError(f"{path}: sentences file does not exist")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise SparrowError(f"{path}: not a readable UTF-8 text file ({exc})")
    texts = [line.strip() for line in lines if line.strip()]
    if not texts:
        raise SparrowError(f"{path}: no sentences (the file is empty or blank)")
    return texts


def run(args):
    from sparrow import SparrowError
    texts = _sentences(args)
    if args.batch_size < 1:
        raise SparrowError(f"--batch-size must be a positive integer, not {args.batch_size}")
    if Path(args.out).is_dir():
        raise SparrowError(f"{args.out}: is a directory, expected a .npy file path")
    from sparrow.sw.minilm import ORIGINAL, open_model, read_manifest
    if args.model != ORIGINAL:
        read_manifest(args.model)       # a foreign DIR is refused before torch is loaded
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()
    from sparrow.arrays import save_npy_atomic
    from sparrow.sw.minilm import embed
    st = open_model(args.model)
    e = embed(st, texts, batch_size=args.batch_size)
    save_npy_atomic(args.out, e)
    name = "all-MiniLM-L6-v2 (original)" if args.model == ORIGINAL else args.model
    print(f"embed: {len(texts)} sentences with {name} -> {args.out} (float32 {list(e.shape)})")
    return 0
