"""``python -m talos_gateway``: the HTTP API, the page, the public gRPC API and the relay."""

from talos_common.server import run
from talos_gateway.app import serve


def main() -> None:
    run(serve)


if __name__ == "__main__":
    main()
