"""API keys: made, listed and revoked by an admin. A key's secret is in the 201 only."""

from __future__ import annotations

from fastapi import APIRouter, status

from api.deps import AdminDep, IdentityDep
from api.responses import ADMIN, BODY, errors
from twinloop.identity.schemas import CreatedKey, CreateKeyRequest, KeyView

router = APIRouter(prefix="/keys", tags=["keys"], responses=errors(*ADMIN))


@router.post("", status_code=status.HTTP_201_CREATED, responses=errors(*BODY))
async def create_key(actor: AdminDep, identity: IdentityDep, body: CreateKeyRequest) -> CreatedKey:
    return await identity.create(body, actor=actor)


@router.get("")
async def list_keys(_: AdminDep, identity: IdentityDep) -> list[KeyView]:
    return await identity.list_keys()


@router.delete("/{key_id}", responses=errors(404, 422))
async def revoke_key(key_id: str, actor: AdminDep, identity: IdentityDep) -> KeyView:
    return await identity.revoke(key_id, actor=actor)
