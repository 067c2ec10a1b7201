"""One module per `regrad` subcommand; each exposes `register(subparsers)`."""
