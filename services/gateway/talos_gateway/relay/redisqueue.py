"""The network queue in Redis: one atomic script per exchange, so no two replicas claim one ticket.

Keys (``P`` is ``talos:<relay_network>``; one Redis instance, not Redis Cluster):

- ``P:t:<job id>``: a ticket (JSON, no prompt, no image), expiring as a safety net;
- ``P:q:<account>``: the account's FIFO of job ids; ``P:ring``: accounts with waiting tickets,
  in the order they are served (round-robin: a served account moves to the tail);
- ``P:r:<replica id>``: a replica's registration (peer address, nodes, their free slots),
  expiring unless renewed; ``P:replicas``: the ids to look up;
- channel ``P:wake``: "a ticket waits", for replicas with a free node.

A ticket whose origin replica has vanished (its registration expired) is dropped when met: its
job died with the replica, and billing returns that job's hold by itself.
"""

from __future__ import annotations

import json
from typing import Any

from redis.asyncio import Redis

from talos_gateway.relay.nodes import parse_size
from talos_gateway.relay.queue import Claimer, Exchanged, NetNode, QueueView, Ticket

# A replica leaves a ticket to another's idle node when that one is expected this much faster.
DEFER_TO_FASTER = 0.75

EXCHANGE = r"""
local P = ARGV[1]
local args = cjson.decode(ARGV[2])
local ring = P .. ':ring'
local replicas = P .. ':replicas'
local function fifo(a) return P .. ':q:' .. a end
local function tkey(j) return P .. ':t:' .. j end
local function rkey(r) return P .. ':r:' .. r end

local function has(list, value)
  if type(list) ~= 'table' then return false end
  for _, v in ipairs(list) do if v == value then return true end end
  return false
end

local function forget_if_empty(a)
  if redis.call('LLEN', fifo(a)) == 0 then redis.call('LREM', ring, 0, a) end
end

local alive_cache = {}
alive_cache[args.me] = true  -- the caller is alive, even if its registration lapsed a moment
local function alive(r)
  local v = alive_cache[r]
  if v == nil then
    v = redis.call('EXISTS', rkey(r)) == 1
    alive_cache[r] = v
  end
  return v
end

local registry_cache = nil
local function registry()
  if registry_cache == nil then
    registry_cache = {}
    for _, r in ipairs(redis.call('SMEMBERS', replicas)) do
      local raw = redis.call('GET', rkey(r))
      if raw then table.insert(registry_cache, {r, raw}) else redis.call('SREM', replicas, r) end
    end
  end
  return registry_cache
end

local nodes_cache = nil
local function network_nodes()
  if nodes_cache == nil then
    nodes_cache = {}
    for _, entry in ipairs(registry()) do
      local reg = cjson.decode(entry[2])
      if type(reg.nodes) == 'table' then
        for _, n in ipairs(reg.nodes) do
          n.r = entry[1]
          table.insert(nodes_cache, n)
        end
      end
    end
  end
  return nodes_cache
end

-- 1. removals: {job id, account}
for _, r in ipairs(args.remove) do
  redis.call('LREM', fifo(r[2]), 0, r[1])
  redis.call('DEL', tkey(r[1]))
  forget_if_empty(r[2])
end

local queued = 0
for _, a in ipairs(redis.call('LRANGE', ring, 0, -1)) do queued = queued + redis.call('LLEN', fifo(a)) end

-- 2. pushes: {ticket json, job id, account, front}; a retry (front) is never refused
local rejected = {}
local pushed = 0
for _, p in ipairs(args.push) do
  if (not p[4]) and queued >= args.bound then
    table.insert(rejected, p[2])
  else
    redis.call('SET', tkey(p[2]), p[1], 'PX', args.ttl)
    local f = fifo(p[3])
    if redis.call('LLEN', f) == 0 then
      redis.call('LREM', ring, 0, p[3])
      redis.call('RPUSH', ring, p[3])
    end
    if p[4] then redis.call('LPUSH', f, p[2]) else redis.call('RPUSH', f, p[2]) end
    queued = queued + 1
    pushed = pushed + 1
  end
end

-- 3. claims for the caller's free nodes, in fair order: each account's head in turn
local free = args.free
local limit = args.limit
local capacity = 0
for _, n in ipairs(free) do capacity = capacity + n.free end
if capacity < limit then limit = capacity end

local function untried_exists(t, size)
  for _, n in ipairs(network_nodes()) do
    if n.healthy and has(n.sizes, size) and not has(t.v, n.id) and not has(t.x, n.id) then return true end
  end
  return false
end

-- An idle node of another replica, clearly faster than ours, is left to take the ticket.
local function faster_elsewhere(t, size, key)
  for _, m in ipairs(network_nodes()) do
    if m.r ~= args.me and m.healthy and m.free > 0 and has(m.sizes, size)
        and not has(t.x, m.id) and not has(t.v, m.id)
        and m.sps * (1 + m.slots - m.free) < key * args.defer then
      return true
    end
  end
  return false
end

local function choose(t)
  if args.only_own and t.o ~= args.me then return nil end
  local size = string.format('%dx%d', t.w, t.h)
  local fallback = nil
  for _, n in ipairs(free) do
    if n.free > 0 and has(n.sizes, size) and not has(t.x, n.id) and not has(n.held, t.j) then
      if has(t.v, n.id) then
        if fallback == nil then fallback = n end
      elseif faster_elsewhere(t, size, n.key) then
        return nil
      else
        return n
      end
    end
  end
  if fallback ~= nil and not untried_exists(t, size) then return fallback end
  return nil
end

local claims = {}
local blocked = {}
local nblocked = 0
while #claims < limit do
  local ringlen = redis.call('LLEN', ring)
  if ringlen == 0 or nblocked >= ringlen then break end
  local a = redis.call('LMOVE', ring, ring, 'LEFT', 'RIGHT')
  if not blocked[a] then
    local f = fifo(a)
    local j = redis.call('LINDEX', f, 0)
    if not j then
      redis.call('RPOP', ring)
    else
      local raw = redis.call('GET', tkey(j))
      local t = nil
      if raw then t = cjson.decode(raw) end
      if t == nil or not alive(t.o) then
        redis.call('LPOP', f)
        redis.call('DEL', tkey(j))
        if redis.call('LLEN', f) == 0 then redis.call('RPOP', ring) end
        queued = queued - 1
      else
        local n = choose(t)
        if n == nil then
          blocked[a] = true
          nblocked = nblocked + 1
        else
          redis.call('LPOP', f)
          redis.call('DEL', tkey(j))
          if redis.call('LLEN', f) == 0 then redis.call('RPOP', ring) end
          n.free = n.free - 1
          table.insert(claims, {raw, n.id})
          queued = queued - 1
        end
      end
    end
  end
end

if pushed > 0 and queued > 0 then redis.call('PUBLISH', P .. ':wake', 'queued') end

-- 4. the view: every ticket in serving order, and the registry
local view = false
if args.view then
  local order = {}
  local accounts = redis.call('LRANGE', ring, 0, -1)
  local lists = {}
  local deepest = 0
  for i, a in ipairs(accounts) do
    lists[i] = redis.call('LRANGE', fifo(a), 0, -1)
    if #lists[i] > deepest then deepest = #lists[i] end
  end
  for depth = 1, deepest do
    for i, a in ipairs(accounts) do
      local j = lists[i][depth]
      if j then
        local raw = redis.call('GET', tkey(j))
        if raw and alive(cjson.decode(raw).o) then
          table.insert(order, raw)
        else
          redis.call('LREM', fifo(a), 0, j)
          redis.call('DEL', tkey(j))
        end
      end
    end
  end
  for _, a in ipairs(accounts) do forget_if_empty(a) end
  queued = #order
  view = {order = order, replicas = registry()}
end

return cjson.encode({claims = claims, rejected = rejected, length = queued, view = view})
"""


def _list(value: Any) -> list[Any]:
    # Redis' Lua JSON encodes an empty list as {}.
    return value if isinstance(value, list) else []


def net_nodes(replicas: list[list[str]], me: str) -> list[NetNode]:
    """The nodes other replicas registered (their registration JSON, as the script returns it)."""
    nodes: list[NetNode] = []
    for replica_id, raw in replicas:
        if replica_id == me:
            continue
        registration = json.loads(raw)
        for node in _list(registration.get("nodes")):
            sizes = frozenset(s for s in (parse_size(str(t)) for t in _list(node.get("sizes"))) if s)
            nodes.append(
                NetNode(
                    node_id=str(node["id"]),
                    replica_id=replica_id,
                    sizes=sizes,
                    slots=int(node.get("slots", 1)),
                    sps=float(node.get("sps", 1.0)),
                    healthy=bool(node.get("healthy")),
                    free=int(node.get("free", 0)),
                    free_at=tuple(float(t) for t in _list(node.get("free_at"))),
                )
            )
    return nodes


class RedisQueue:
    """Many replicas: the fair queue in Redis (see the module docstring for its keys)."""

    shared = True

    def __init__(
        self, redis: Redis, prefix: str, replica_id: str, *, bound: int, ticket_ttl_seconds: float
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.replica_id = replica_id
        self.bound = bound
        self.ticket_ttl_ms = int(ticket_ttl_seconds * 1000)
        self._script = redis.register_script(EXCHANGE)
        self._pushes: list[tuple[Ticket, bool]] = []
        self._removes: dict[str, Ticket] = {}
        self.only_own = False  # a draining replica claims only its own jobs

    def stage_push(self, ticket: Ticket, *, front: bool = False) -> None:
        self._pushes.append((ticket, front))

    def stage_remove(self, ticket: Ticket) -> None:
        staged = len(self._pushes)
        self._pushes = [(t, f) for t, f in self._pushes if t.job_id != ticket.job_id]
        if len(self._pushes) == staged:
            self._removes[ticket.job_id] = ticket

    def pending(self) -> bool:
        return bool(self._pushes or self._removes)

    def local_length(self) -> int:
        return len(self._pushes)

    async def exchange(self, claimer: Claimer | None, *, want_view: bool) -> Exchanged:
        pushes, removes = self._pushes, self._removes
        self._pushes, self._removes = [], {}
        offer = claimer.offer() if claimer is not None else []
        args = {
            "me": self.replica_id,
            "remove": [[t.job_id, t.account_id] for t in removes.values()],
            "push": [[t.to_json(), t.job_id, t.account_id, front] for t, front in pushes],
            "bound": self.bound,
            "ttl": self.ticket_ttl_ms,
            "free": [
                {"id": n.node_id, "sizes": list(n.sizes), "free": n.free, "held": list(n.held), "key": n.key}
                for n in offer
            ],
            "defer": DEFER_TO_FASTER,
            "limit": sum(n.free for n in offer),
            "only_own": self.only_own,
            "view": want_view,
        }
        try:
            raw = await self._script(args=[self.prefix, json.dumps(args, separators=(",", ":"))])
        except BaseException:
            # Not applied (or its answer lost): stage them again; a removal is idempotent and a
            # ticket pushed twice is claimed once (the second copy has no ticket left).
            self._pushes = pushes + self._pushes
            self._removes = {**removes, **self._removes}
            raise
        data = json.loads(raw)
        claims = _list(data.get("claims"))
        if claimer is not None:
            for ticket_json, node_id in claims:
                claimer.place_on(Ticket.from_json(ticket_json), str(node_id))
        view = None
        raw_view = data.get("view")
        if isinstance(raw_view, dict):
            tickets = [Ticket.from_json(t) for t in _list(raw_view.get("order"))]
            view = QueueView(tickets, net_nodes(_list(raw_view.get("replicas")), self.replica_id))
        return Exchanged(
            [str(j) for j in _list(data.get("rejected"))], view, len(claims), int(data["length"])
        )

    async def close(self) -> None:
        return None
