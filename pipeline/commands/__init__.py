"""Thin command modules for the commands that are not a stage of their own (``inspect``,
``models``, ``train``, ``predict``): each ``run(options) -> exit status`` wires stages together."""
