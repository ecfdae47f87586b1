"""``python -m talos_moderation``: serve until SIGTERM, then drain."""

from talos_common.server import run
from talos_moderation.service import serve

if __name__ == "__main__":
    run(serve)
