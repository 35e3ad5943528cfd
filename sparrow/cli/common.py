"""Arguments that several commands share, declared once."""

__all__ = ["add_model_io", "engine_config"]


def add_model_io(parser, model_help="model directory (manifest.json + .npz files)"):
    """The model directory, ``--inputs X.npy`` and ``--out Y.npy`` of golden, sim and run."""
    parser.add_argument("model", metavar="DIR", help=model_help)
    parser.add_argument("--inputs", required=True, metavar="X.npy",
                        help="inputs [N, *input shape] or [N, input size]: int8 codes, or float values "
                             "quantised with the model's input scale")
    parser.add_argument("--out", required=True, metavar="Y.npy", help="where to write the int8 outputs")


def engine_config(pes):
    """The :class:`~sparrow.hw.engine.EngineConfig` of ``--pes P``; SparrowError when P is out of range."""
    from sparrow import SparrowError
    from sparrow.hw.engine import EngineConfig
    if not 1 <= pes <= 1024:
        raise SparrowError(f"--pes must be between 1 and 1024, not {pes}")
    return EngineConfig(pes=pes)
