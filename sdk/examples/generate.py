"""Generate one image with the TALOS SDK, showing progress, and save it.

    export TALOS_API_KEY=tk_...            # `make up` prints a demo key
    python sdk/examples/generate.py "a lighthouse at dusk, long exposure" lighthouse.png

TALOS_ADDRESS picks the gateway (default 127.0.0.1:50051, the local mesh).
"""

from __future__ import annotations

import sys

import talos_sdk


def main() -> int:
    prompt = sys.argv[1] if len(sys.argv) > 1 else "a lighthouse at dusk, long exposure"
    path = sys.argv[2] if len(sys.argv) > 2 else "lighthouse.png"

    with talos_sdk.Client() as client:  # key from TALOS_API_KEY, address from TALOS_ADDRESS
        account = client.account()
        print(f"{account.spendable} credits to spend, {account.price_per_image} per image")

        stream = client.generate(prompt, style="photo", size="1216x832", steps=20, max_retries=2)
        try:
            for event in stream:
                if isinstance(event, talos_sdk.Queued):
                    print(f"queued at position {event.position}, ~{event.eta_seconds:.0f}s")
                elif isinstance(event, talos_sdk.Started):
                    print(f"job {event.job_id} started")
                elif isinstance(event, talos_sdk.Progress):
                    print(f"\rstep {event.step}/{event.total_steps}", end="", flush=True)
                elif isinstance(event, talos_sdk.Completed):
                    print()
                    event.save(path)
                    print(f"saved {path}: {event.width}x{event.height}, seed {event.seed}")
                    print(f"charged {event.credits_charged}, {event.balance} credits left")
                elif isinstance(event, talos_sdk.Failed):
                    print()
                    raise event.error()  # nothing was charged
        except KeyboardInterrupt:
            stream.cancel()  # releases the hold; nothing is charged
            return 130
        except talos_sdk.PolicyRefusal as refusal:
            print(f"refused: {refusal.message}", file=sys.stderr)
            return 3
        except (talos_sdk.RateLimited, talos_sdk.NoCapacity) as busy:
            print(f"busy, try again in {busy.retry_after or 10:.0f}s", file=sys.stderr)
            return 5
        except talos_sdk.TalosError as error:
            print(f"failed: {error}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
