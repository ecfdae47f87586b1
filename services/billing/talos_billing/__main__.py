"""``python -m talos_billing``: serve billing until SIGTERM, then drain."""

from talos_billing.service import serve
from talos_common.server import run

if __name__ == "__main__":
    run(serve)
