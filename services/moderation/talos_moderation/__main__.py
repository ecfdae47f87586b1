"""``python -m talos_moderation``: serve until SIGTERM, then drain."""

from talos_moderation.service import main

if __name__ == "__main__":
    main()
