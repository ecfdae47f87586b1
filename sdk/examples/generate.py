"""Generate images with the TALOS SDK, showing progress, and save them.

    export TALOS_API_KEY=tk_...            # `make up` prints a demo key
    python sdk/examples/generate.py "a lighthouse at dusk, long exposure" lighthouse.png 2

The last argument is how many images to make from the prompt (default 1); with several,
lighthouse.png becomes lighthouse-0.png, lighthouse-1.png... TALOS_ADDRESS picks the gateway
(default 127.0.0.1:50051, the local mesh, in plaintext; any other address is reached over TLS,
with TALOS_CA_FILE naming a private CA if it has one).
"""

from __future__ import annotations

import sys

import talos_sdk


def main() -> int:
    prompt = sys.argv[1] if len(sys.argv) > 1 else "a lighthouse at dusk, long exposure"
    path = sys.argv[2] if len(sys.argv) > 2 else "lighthouse.png"
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 1

    with talos_sdk.Client() as client:  # key from TALOS_API_KEY, address from TALOS_ADDRESS
        account = client.account()
        print(f"{account.spendable} credits to spend, {account.price_per_image} per image")

        stream = client.stream(prompt, n=n, style="photo", size="1216x832", steps=20, max_retries=2)
        try:
            for event in stream:  # the events of all n images, each naming its `image`
                if isinstance(event, talos_sdk.Queued):
                    print(f"image {event.image}: queued at position {event.position}")
                elif isinstance(event, talos_sdk.Progress):
                    print(f"\rimage {event.image}: step {event.step}/{event.total_steps}", end="", flush=True)
                    if event.preview_withheld:
                        print(" (preview withheld: 18+ is off)", end="")
                elif isinstance(event, talos_sdk.Completed):
                    saved = event.save(talos_sdk.numbered_path(path, event.image, n))
                    print(f"\nsaved {saved}: {event.width}x{event.height}, seed {event.seed}")
                elif isinstance(event, talos_sdk.Failed):
                    print(f"\nimage {event.image} refunded: {event.code}: {event.message}")
            result = stream.result()  # raises the failure when no image was delivered
        except KeyboardInterrupt:
            stream.cancel()  # releases the holds of unfinished images; nothing more is charged
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
    print(f"charged {result.credits_charged}, {result.balance} credits left")
    return 0


if __name__ == "__main__":
    sys.exit(main())
