"""``python -m talos_billing``: serve billing until SIGTERM, then drain."""

from talos_billing.service import main

if __name__ == "__main__":
    main()
