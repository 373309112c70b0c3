"""The `ocula` command line: one entry point over runtime, export, board and hil.

Only this package prints; the libraries log and raise. Each module in `ocula.commands`
registers one subcommand (or a group) and imports heavy libraries inside its handlers, so
`ocula --help` stays fast.
"""
