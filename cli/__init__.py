"""The ``aegis`` command."""
