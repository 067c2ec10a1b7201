"""The `regrad` command line: the one entry point over the offline jobs and the service.

`cli.main` builds the parser from one small module per verb in `cli/commands/`; nothing else in
the project imports this package.
"""
