"""Limits shared by the readers of a conf, in a module that imports nothing:
the generator checks them before it knows whether it must parse YAML at all."""

MAX_FILE_BYTES = 16 * 1024 * 1024  # one conf file
