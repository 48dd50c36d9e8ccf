"""The Lua side of retention (`cache/retention.py` plans what these scripts do).

`PURGE_SCRIPT` runs one slice of a sweep atomically. Ops (KEYS and ARGV consumed in order, ARGV[1]
the op count), each re-checking its guards before it removes anything:
- `F` fence: KEYS the lease; ARGV the token (FENCED unless the lease holds it).
- `O` a closed order: KEYS list, seen, index, closed set, tombstones, SubmitOrder key, its seen,
  its index, the trader's pending openings; ARGV id, cutoff, list length read, the command's SHA-1
  ('' none), its seen field, field count, fields. Only if still closed at or before the cutoff with
  that length; 1, or 2 with the command. The opening half of a flip it made, still held for a
  PositionOpened that never came, goes with it (the hash would otherwise only grow).
- `P` a position whose fills are all closed cycles: KEYS list, seen, index, closed set, trimmed
  counts; ARGV id, length read, member count, members, field count, fields.
- `Q` a position's first fills: KEYS list, seen, closed set, trimmed counts; ARGV id, count, SHA-1
  of the head read, trimmed count read, member count, members, field count, fields (count 0: only
  the members go).
- `L` a SubmitOrderList whose orders are all gone: KEYS command, seen, index, each order's key;
  ARGV id, SHA-1 read, seen field, order count.
- `T` an account's oldest states: KEYS list, seen; ARGV count, SHA-1 of the head read, field
  count, fields.
- `X` tombstones older than the cutoff: KEYS the tombstones; ARGV cutoff.
Pass 1 checks the fence and every key's type, so a slice removes all it may or nothing.
"""

from __future__ import annotations

from typing import Final

PURGE_SCRIPT: Final = """
local types = {
  F = {'string'},
  O = {'list', 'hash', 'zset', 'zset', 'zset', 'string', 'hash', 'zset', 'hash'},
  P = {'list', 'hash', 'zset', 'zset', 'hash'},
  Q = {'list', 'hash', 'zset', 'hash'},
  L = {'string', 'hash', 'zset'},
  T = {'list', 'hash'},
  X = {'zset'},
}
local fixed_args = {F = 1, O = 6, P = 4, Q = 6, L = 4, T = 3, X = 1}
local FIELDS_PER_CALL = 1000
local n = tonumber(ARGV[1])
-- The keys and the extra arguments of op i: (number of keys, number of args after the op letter).
local function sizes(op, a)
  local nkeys, nargs = #types[op], fixed_args[op]
  if op == 'O' then nargs = nargs + tonumber(ARGV[a + 6]) end
  if op == 'P' or op == 'Q' then
    local at = op == 'P' and 3 or 5  -- where the member count is
    local members = tonumber(ARGV[a + at])
    nargs = nargs + members + tonumber(ARGV[a + at + 1 + members])
  end
  if op == 'T' then nargs = nargs + tonumber(ARGV[a + 3]) end
  if op == 'L' then nkeys = nkeys + tonumber(ARGV[a + 4]) end
  return nkeys, nargs
end
local function check_type(key, want)
  local have = redis.call('TYPE', key)['ok']
  if have ~= 'none' and have ~= want then
    return redis.error_reply('WRONGTYPE tradecache: ' .. key .. ' holds a ' .. have .. ', not a ' .. want)
  end
  return nil
end
-- Pass 1: the fence and every key's type, so that a slice removes all it may or nothing.
local k, a = 1, 2
for i = 1, n do
  local op = ARGV[a]
  if types[op] == nil then
    return redis.error_reply('ERR tradecache: unknown purge operation ' .. tostring(op))
  end
  local nkeys, nargs = sizes(op, a)
  for j = 0, nkeys - 1 do
    local problem = check_type(KEYS[k + j], types[op][j + 1] or 'list')
    if problem then
      return problem
    end
  end
  if op == 'F' and redis.call('GET', KEYS[k]) ~= ARGV[a + 1] then
    return redis.error_reply('FENCED tradecache: this writer does not hold the lease ' .. KEYS[k])
  end
  k, a = k + nkeys, a + 1 + nargs
end
local function hdel(key, first, count)
  local last = first + count - 1
  for start = first, last, FIELDS_PER_CALL do
    redis.call('HDEL', key, unpack(ARGV, start, math.min(start + FIELDS_PER_CALL - 1, last)))
  end
end
local function closed_before(closed_key, id, cutoff)
  local score = redis.call('ZSCORE', closed_key, id)
  return score and tonumber(score) <= tonumber(cutoff)
end
local function same_bytes(key, digest)
  local value = redis.call('GET', key)
  return value and redis.sha1hex(value) == digest
end
-- Pass 2: each op re-checks its guards, then removes. Result: what it removed (0: skipped).
local time = redis.call('TIME')
local now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local results = {}
k, a = 1, 2
for i = 1, n do
  local op = ARGV[a]
  local nkeys, nargs = sizes(op, a)
  local removed = 0
  if op == 'O' then
    local id, cutoff, length = ARGV[a + 1], ARGV[a + 2], tonumber(ARGV[a + 3])
    if closed_before(KEYS[k + 3], id, cutoff) and redis.call('LLEN', KEYS[k]) == length then
      redis.call('DEL', KEYS[k])
      hdel(KEYS[k + 1], a + 7, tonumber(ARGV[a + 6]))
      redis.call('ZREM', KEYS[k + 2], id)
      redis.call('ZREM', KEYS[k + 3], id)
      redis.call('ZADD', KEYS[k + 4], now_ms, id)
      redis.call('HDEL', KEYS[k + 8], id)
      removed = 1
      if ARGV[a + 4] ~= '' and same_bytes(KEYS[k + 5], ARGV[a + 4]) then
        redis.call('DEL', KEYS[k + 5])
        redis.call('HDEL', KEYS[k + 6], ARGV[a + 5])
        redis.call('ZREM', KEYS[k + 7], id)
        removed = 2
      end
    end
  elseif op == 'P' or op == 'Q' then
    -- P: every fill is in closed cycles: the position goes. Q: its first `count` fills go (a
    -- NETTING position that opened again), or none (count 0: only the cycles' marks go).
    local id = ARGV[a + 1]
    local at = op == 'P' and 3 or 5
    local members = tonumber(ARGV[a + at])
    local fields_count = tonumber(ARGV[a + at + 1 + members])
    local ok, count
    if op == 'P' then
      ok = redis.call('LLEN', KEYS[k]) == tonumber(ARGV[a + 2])
    else
      count = tonumber(ARGV[a + 2])
      local head = redis.call('LINDEX', KEYS[k], 0)
      local trimmed = redis.call('HGET', KEYS[k + 3], id) or '0'
      ok = count == 0 or (head and redis.sha1hex(head) == ARGV[a + 3] and trimmed == ARGV[a + 4]
        and redis.call('LLEN', KEYS[k]) >= count)
    end
    if ok then
      if op == 'P' then
        redis.call('DEL', KEYS[k])
        redis.call('ZREM', KEYS[k + 2], id)
        redis.call('HDEL', KEYS[k + 4], id)
      elseif count > 0 then
        redis.call('LTRIM', KEYS[k], count, -1)
        redis.call('HINCRBY', KEYS[k + 3], id, count)
      end
      hdel(KEYS[k + 1], a + at + 2 + members, fields_count)
      if members > 0 then
        redis.call('ZREM', KEYS[k + (op == 'P' and 3 or 2)], unpack(ARGV, a + at + 1, a + at + members))
      end
      removed = 1
    end
  elseif op == 'L' then
    local id, digest, seen_field, members = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], tonumber(ARGV[a + 4])
    local gone = same_bytes(KEYS[k], digest)
    for j = 1, members do
      gone = gone and redis.call('EXISTS', KEYS[k + 2 + j]) == 0
    end
    if gone then
      redis.call('DEL', KEYS[k])
      redis.call('HDEL', KEYS[k + 1], seen_field)
      redis.call('ZREM', KEYS[k + 2], id)
      removed = 1
    end
  elseif op == 'T' then
    local count, digest = tonumber(ARGV[a + 1]), ARGV[a + 2]
    local head = redis.call('LINDEX', KEYS[k], 0)
    if head and redis.sha1hex(head) == digest and redis.call('LLEN', KEYS[k]) > count then
      redis.call('LTRIM', KEYS[k], count, -1)
      hdel(KEYS[k + 1], a + 4, tonumber(ARGV[a + 3]))
      removed = count
    end
  elseif op == 'X' then
    removed = redis.call('ZREMRANGEBYSCORE', KEYS[k], '-inf', ARGV[a + 1])
  end
  results[i] = removed
  k, a = k + nkeys, a + 1 + nargs
end
return results
"""


# Redis' clock in ms, asked of the node that holds the trader's keys (a key routes it in a cluster).
CLOCK_SCRIPT: Final = "local t = redis.call('TIME') return t[1] * 1000 + math.floor(t[2] / 1000)"

__all__ = ["CLOCK_SCRIPT", "PURGE_SCRIPT"]
