"""talos.billing.v1.BillingService over the store. Domain errors are TalosErrors.

Billing never sees a prompt or an image: a job is an id, an account, an amount and a state.
Keys and tokens are never logged.
"""

from __future__ import annotations

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from talos.billing.v1 import billing_pb2, billing_pb2_grpc
from talos_billing.rules import AccountView, HoldView
from talos_billing.store import Store

SERVICE_NAME = billing_pb2.DESCRIPTOR.services_by_name["BillingService"].full_name


def _timestamp(seconds: float) -> Timestamp:
    whole = int(seconds)
    return Timestamp(seconds=whole, nanos=min(999_999_999, round((seconds - whole) * 1e9)))


class BillingServicer(billing_pb2_grpc.BillingServiceServicer):
    def __init__(self, store: Store) -> None:
        self.store = store

    def account_state(self, view: AccountView) -> billing_pb2.AccountState:
        return billing_pb2.AccountState(
            account_id=view.account_id,
            balance=view.balance,
            daily_allowance=view.daily_allowance,
            allowance_remaining=view.allowance_remaining,
            allowance_resets_at=_timestamp(view.allowance_resets_at),
            age_confirmed=view.age_confirmed,
            price_per_image=self.store.price,
        )

    @staticmethod
    def hold(view: HoldView) -> billing_pb2.Hold:
        return billing_pb2.Hold(
            job_id=view.job_id,
            account_id=view.account_id,
            amount=view.amount,
            from_allowance=view.from_allowance,
            from_balance=view.from_balance,
            state=view.state.value,  # type: ignore[arg-type]  # numbered as billing_pb2.HoldState
            expires_at=_timestamp(view.expires_at),
        )

    async def CreateAccount(
        self, request: billing_pb2.CreateAccountRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.CreateAccountResponse:
        account_id, api_key = await self.store.create_account(request.credits, request.daily_allowance)
        return billing_pb2.CreateAccountResponse(account_id=account_id, api_key=api_key)

    async def Authenticate(
        self, request: billing_pb2.AuthenticateRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.AccountState:
        return self.account_state(await self.store.authenticate(request.api_key))

    async def GetAccount(
        self, request: billing_pb2.GetAccountRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.AccountState:
        return self.account_state(await self.store.get_account(request.account_id))

    async def Grant(
        self, request: billing_pb2.GrantRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.AccountState:
        return self.account_state(await self.store.grant(request.account_id, request.credits))

    async def SetAllowance(
        self, request: billing_pb2.SetAllowanceRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.AccountState:
        return self.account_state(await self.store.set_allowance(request.account_id, request.daily_allowance))

    async def CreateApiKey(
        self, request: billing_pb2.CreateApiKeyRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.CreateApiKeyResponse:
        return billing_pb2.CreateApiKeyResponse(api_key=await self.store.create_api_key(request.account_id))

    async def RevokeApiKeys(
        self, request: billing_pb2.RevokeApiKeysRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.RevokeApiKeysResponse:
        return billing_pb2.RevokeApiKeysResponse(revoked=await self.store.revoke_api_keys(request.account_id))

    async def ConfirmAge(
        self, request: billing_pb2.ConfirmAgeRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.AccountState:
        return self.account_state(await self.store.confirm_age(request.account_id))

    async def Reserve(
        self, request: billing_pb2.ReserveRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.ReserveResponse:
        hold, account = await self.store.reserve(request.job_id, request.account_id)
        return billing_pb2.ReserveResponse(hold=self.hold(hold), account=self.account_state(account))

    async def ReserveMany(
        self, request: billing_pb2.ReserveManyRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.ReserveManyResponse:
        holds, account = await self.store.reserve_many(request.account_id, request.job_ids)
        return billing_pb2.ReserveManyResponse(
            holds=[self.hold(hold) for hold in holds], account=self.account_state(account)
        )

    async def Capture(
        self, request: billing_pb2.CaptureRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.CaptureResponse:
        hold, account = await self.store.capture(request.job_id)
        return billing_pb2.CaptureResponse(hold=self.hold(hold), account=self.account_state(account))

    async def Release(
        self, request: billing_pb2.ReleaseRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.ReleaseResponse:
        hold, account = await self.store.release(request.job_id, request.reason)
        return billing_pb2.ReleaseResponse(hold=self.hold(hold), account=self.account_state(account))

    async def CreateNodeToken(
        self, request: billing_pb2.CreateNodeTokenRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.CreateNodeTokenResponse:
        node_id, token = await self.store.create_node_token(request.name)
        return billing_pb2.CreateNodeTokenResponse(node_id=node_id, token=token)

    async def AuthenticateNode(
        self, request: billing_pb2.AuthenticateNodeRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.NodeIdentity:
        node = await self.store.authenticate_node(request.token)
        return billing_pb2.NodeIdentity(node_id=node.node_id, name=node.name)

    async def RevokeNodeToken(
        self, request: billing_pb2.RevokeNodeTokenRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.RevokeNodeTokenResponse:
        return billing_pb2.RevokeNodeTokenResponse(
            revoked=await self.store.revoke_node_token(request.node_id)
        )

    async def ActiveNodes(
        self, request: billing_pb2.ActiveNodesRequest, context: grpc.aio.ServicerContext
    ) -> billing_pb2.ActiveNodesResponse:
        return billing_pb2.ActiveNodesResponse(
            active_node_ids=await self.store.active_nodes(request.node_ids)
        )
