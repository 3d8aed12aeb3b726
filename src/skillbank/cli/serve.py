"""``skillbank serve``: a Tinker-compatible training API (docs/serve.md).

Only argparse is imported here; the handler imports torch and the server after parsing.
``add_parser(subparsers)`` adds the verb and sets ``args.handler``.
"""

from __future__ import annotations

import argparse

EPILOG = """\
API keys: --api-key-file FILE (one key per line) or the environment variable
SKILLBANK_SERVE_API_KEYS (comma-separated). Keys start with 'tml-' (the SDK's rule).
Point a Tinker loop at it:
  export TINKER_BASE_URL=http://127.0.0.1:8000 TINKER_API_KEY=tml-...
  python -c "import tinker; tinker.ServiceClient().create_lora_training_client(BASE, rank=8)"
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from skillbank.cli.argtypes import text_verb
    from skillbank.config import add_config_args
    from skillbank.service.serve.config import ServeConfig

    p = text_verb(
        subparsers,
        "serve",
        "Tinker-compatible training API: tenants = LoRA slots, one fused step (docs/serve.md)",
        epilog=EPILOG,
    )
    p.add_argument("--api-key-file", help="file with the accepted API keys, one per line")
    add_config_args(p, ServeConfig)
    p.set_defaults(handler=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> None:
    from skillbank.config import config_from_args
    from skillbank.errors import ConfigError
    from skillbank.service.serve.auth import read_keys
    from skillbank.service.serve.config import ServeConfig
    from skillbank.service.serve.main import serve

    cfg = config_from_args(args, ServeConfig())
    if not cfg.base:
        raise ConfigError("command line: field 'base': give --base MODEL_DIR")
    serve(cfg, read_keys(args.api_key_file))


def main(argv: list[str] | None = None) -> None:
    """``python -m skillbank.cli.serve ...`` (the same verb, on its own)."""
    parser = argparse.ArgumentParser(prog="skillbank")
    add_parser(parser.add_subparsers(dest="verb", required=True))
    args = parser.parse_args(argv)
    try:
        args.handler(args)
    except Exception as e:
        from skillbank.errors import SkillbankError

        if isinstance(e, SkillbankError):
            raise SystemExit(f"error: {e}") from None
        raise


if __name__ == "__main__":
    main()
