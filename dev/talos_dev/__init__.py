"""Development only: start the whole TALOS mesh as local processes (``make up``, the tests)."""
