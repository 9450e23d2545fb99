"""One module per `proxyd` subcommand; each defines `register(subparsers)`."""
