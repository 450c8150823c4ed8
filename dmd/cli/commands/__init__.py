"""Sub-commands of the ``dmd`` CLI: one module each, see :mod:`dmd.cli`."""
