"""The ``smalldet`` console command: one module per subcommand, dispatched by ``main.py``.

Each command module holds its argparse parser and ``main(argv=None, prog=None) -> int`` and stays
thin (parse the flags, call the package). ``tools/*.py`` are shims over the same ``main``
functions, so a script and the console command accept the same flags and exit the same way.
Nothing here is imported by the rest of the package: ``cli`` is the top layer.
"""
