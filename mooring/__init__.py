"""The `mooring` command line and the local cluster launcher."""

__all__: list[str] = []
