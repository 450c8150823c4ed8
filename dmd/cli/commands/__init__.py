"""Sub-commands of the ``dmd`` CLI: one module each, see :mod:`dmd.cli`."""

__all__: list[str] = []  # the commands are modules, loaded by name from dmd.cli.COMMANDS
