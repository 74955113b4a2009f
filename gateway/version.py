"""The package's version, in a module of its own: every floor may read it, and reading it
must not import the package's public API (which imports the server)."""

__version__ = "0.1.0"
