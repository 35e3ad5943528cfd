"""Arguments that several commands share, declared once."""

__all__ = ["add_model_io"]


def add_model_io(parser, model_help="model directory (manifest.json + .npz files)"):
    """The model directory, ``--inputs X.npy`` and ``--out Y.npy`` of golden, sim and run."""
    parser.add_argument("model", metavar="DIR", help=model_help)
    parser.add_argument("--inputs", required=True, metavar="X.npy",
                        help="int8 inputs [N, *input shape] or [N, input size]")
    parser.add_argument("--out", required=True, metavar="Y.npy", help="where to write the int8 outputs")
