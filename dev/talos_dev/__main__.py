"""``python -m talos_dev``: the same as ``python -m talos_dev.mesh`` (``make up``)."""

from talos_dev.mesh import main

if __name__ == "__main__":
    raise SystemExit(main())
