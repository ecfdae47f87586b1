"""``python -m talos_gateway``: the HTTP API, the page, the public gRPC API and the relay."""

from talos_gateway.app import main

if __name__ == "__main__":
    main()
