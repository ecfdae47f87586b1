"""``talos-admin``: the operator's commands, sent to billing over gRPC.

Billing is reached at ``TALOS_BILLING_ADDR`` (default 127.0.0.1:50061, the local mesh).
Every command prints one line of JSON on stdout; errors go to stderr with exit status 1
(2 for bad arguments). Keys and tokens are printed once, here, and nowhere else.

    talos-admin create-account [--credits N] [--allowance N]   {"account_id", "api_key"}
    talos-admin grant ACCOUNT_ID N                              the account after the grant
    talos-admin set-allowance ACCOUNT_ID N                      the account after the change
    talos-admin revoke-key ACCOUNT_ID                           {"account_id", "revoked"}
    talos-admin create-key ACCOUNT_ID                           {"account_id", "api_key"}
    talos-admin create-node-token [--name NAME]                 {"node_id", "token"}
    talos-admin revoke-node-token NODE_ID                       {"node_id", "revoked"}
    talos-admin account ACCOUNT_ID                              the account
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import grpc

from talos.billing.v1 import billing_pb2, billing_pb2_grpc
from talos_common.errors import from_rpc_error

DEFAULT_ADDR = "127.0.0.1:50061"
ADDR_VARIABLE = "TALOS_BILLING_ADDR"


def account_json(state: billing_pb2.AccountState) -> dict[str, Any]:
    return {
        "account_id": state.account_id,
        "balance": state.balance,
        "daily_allowance": state.daily_allowance,
        "allowance_remaining": state.allowance_remaining,
        "allowance_resets_at": state.allowance_resets_at.ToJsonString(),
        "age_confirmed": state.age_confirmed,
        "price_per_image": state.price_per_image,
    }


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def _non_negative(text: str) -> int:
    value = _whole_number(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be zero or more")
    return value


def _positive(text: str) -> int:
    value = _whole_number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="talos-admin",
        description=f"TALOS operator commands; billing is at ${ADDR_VARIABLE} (default {DEFAULT_ADDR}).",
    )
    top.add_argument(
        "--address",
        "--addr",
        dest="addr",
        default=None,
        help=f"billing gRPC host:port (default: ${ADDR_VARIABLE} or {DEFAULT_ADDR})",
    )
    top.add_argument(
        "--timeout", type=float, default=10.0, help="deadline for the call, seconds (default 10)"
    )
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    create = commands.add_parser("create-account", help="create an account and its first API key")
    create.add_argument("--credits", type=_non_negative, default=0)
    create.add_argument("--allowance", type=_non_negative, default=0, help="staker daily allowance")

    grant = commands.add_parser("grant", help="add credits to an account")
    grant.add_argument("account_id")
    grant.add_argument("credits", type=_positive)

    allowance = commands.add_parser("set-allowance", help="set an account's daily allowance")
    allowance.add_argument("account_id")
    allowance.add_argument("allowance", type=_non_negative)

    revoke = commands.add_parser("revoke-key", help="revoke every API key of an account")
    revoke.add_argument("account_id")

    new_key = commands.add_parser("create-key", help="issue a new API key for an account")
    new_key.add_argument("account_id")

    node = commands.add_parser("create-node-token", help="issue a render node token")
    node.add_argument("--name", default="")

    revoke_node = commands.add_parser("revoke-node-token", help="revoke a render node's token")
    revoke_node.add_argument("node_id")

    show = commands.add_parser("account", help="show an account")
    show.add_argument("account_id")
    return top


def run(args: argparse.Namespace, stub: billing_pb2_grpc.BillingServiceStub) -> dict[str, Any]:
    timeout = args.timeout
    command: str = args.command
    if command == "create-account":
        created = stub.CreateAccount(
            billing_pb2.CreateAccountRequest(credits=args.credits, daily_allowance=args.allowance),
            timeout=timeout,
        )
        return {"account_id": created.account_id, "api_key": created.api_key}
    if command == "grant":
        return account_json(
            stub.Grant(
                billing_pb2.GrantRequest(account_id=args.account_id, credits=args.credits), timeout=timeout
            )
        )
    if command == "set-allowance":
        request = billing_pb2.SetAllowanceRequest(account_id=args.account_id, daily_allowance=args.allowance)
        return account_json(stub.SetAllowance(request, timeout=timeout))
    if command == "revoke-key":
        revoked = stub.RevokeApiKeys(
            billing_pb2.RevokeApiKeysRequest(account_id=args.account_id), timeout=timeout
        )
        return {"account_id": args.account_id, "revoked": revoked.revoked}
    if command == "create-key":
        key = stub.CreateApiKey(billing_pb2.CreateApiKeyRequest(account_id=args.account_id), timeout=timeout)
        return {"account_id": args.account_id, "api_key": key.api_key}
    if command == "create-node-token":
        token = stub.CreateNodeToken(billing_pb2.CreateNodeTokenRequest(name=args.name), timeout=timeout)
        return {"node_id": token.node_id, "token": token.token}
    if command == "revoke-node-token":
        reply = stub.RevokeNodeToken(
            billing_pb2.RevokeNodeTokenRequest(node_id=args.node_id), timeout=timeout
        )
        return {"node_id": args.node_id, "revoked": reply.revoked}
    if command == "account":
        return account_json(
            stub.GetAccount(billing_pb2.GetAccountRequest(account_id=args.account_id), timeout=timeout)
        )
    raise AssertionError(command)  # argparse only lets known commands through


def main(
    argv: Sequence[str] | None = None,
    *,
    out: Callable[[str], Any] = print,
) -> int:
    args = parser().parse_args(argv)
    address = args.addr or os.environ.get(ADDR_VARIABLE) or DEFAULT_ADDR
    with grpc.insecure_channel(address) as channel:
        stub = billing_pb2_grpc.BillingServiceStub(channel)
        try:
            result = run(args, stub)
        except grpc.RpcError as error:
            talos = from_rpc_error(error)
            print(f"talos-admin: {args.command} failed: {talos.code}: {talos.message}", file=sys.stderr)
            if talos.code in ("unavailable", "timeout"):
                print(f"talos-admin: is billing running at {address}? (set {ADDR_VARIABLE})", file=sys.stderr)
            return 1
    out(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
