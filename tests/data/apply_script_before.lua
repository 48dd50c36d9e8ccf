
-- The type an operation's first key must have (false: any, it is replaced or deleted).
local expected = {A = 'list', S = 'string', N = 'string', R = false, H = false, M = 'hash', D = false, C = 'string',
                  F = 'string', K = 'hash', Z = 'zset', U = 'zset', Y = 'zset', P = 'hash', Q = 'hash'}
-- The types of an operation's other keys: a dedupe hash and an index, or nothing.
local others = {A = {'hash', 'zset'}, S = {'zset'}, N = {'hash', 'zset'}, R = {'zset'}, H = {'zset'}, M = {'zset'},
                D = {'zset'}, Y = {'list', 'hash', 'hash'}}
local nkeys = {A = 3, S = 2, N = 3, R = 2, H = 2, M = 2, D = 2, C = 1, F = 1, K = 1, Z = 1, U = 1, Y = 4, P = 1, Q = 1}
local nargs = {A = 3, S = 2, N = 3, R = 2, D = 1, C = 1, F = 1, K = 3, Z = 1, U = 1, Y = 3, P = 2, Q = 1}
-- The values packed (a msgpack array: its first byte is 0x90..0x9f, 0xdc or 0xdd), and then maybe
-- where each operation's key is among KEYS, each named once; or the values themselves.
local first = ARGV[1] and string.byte(ARGV[1]) or 0
local where = first >= 0x90 and ARGV[2] and cmsgpack.unpack(ARGV[2])
local ARGV = first >= 0x90 and cmsgpack.unpack(ARGV[1]) or ARGV
local KEYS = KEYS
if where then
  local named = KEYS
  KEYS = {}
  for i, j in ipairs(where) do
    KEYS[i] = named[j]
  end
end
-- Field/value pairs per HSET: Lua's unpack() refuses more than ~8,000 values at once.
local HSET_PAIRS = 1000
local n = tonumber(ARGV[1])
-- An id is seen per entity (SPEC: "already stored for that entity"): the field is the entity id,
-- length-prefixed so that no two (entity, id) pairs give the same field, then the event id.
local function seen_field(entity, id)
  return #entity .. ':' .. entity .. id
end
-- The value of a seen field: the first 16 hex digits of the stored payload's SHA-1, so that a
-- second payload under the same id is recognised as the same (a duplicate) or not (a conflict).
-- Earlier versions stored '1': the content is unknown, so a repeat counts as a duplicate.
local function digest(payload)
  return string.sub(redis.sha1hex(payload), 1, 16)
end
-- Pass 1: check everything that could fail, so that nothing is written when any write would.
local checked = {}
local function check_type(key, want)
  if checked[key] == want then
    return nil
  end
  local have = redis.call('TYPE', key)['ok']
  if have ~= 'none' and have ~= want then
    return redis.error_reply('WRONGTYPE tradecache: ' .. key .. ' holds a ' .. have .. ', not a ' .. want)
  end
  checked[key] = want
  return nil
end
-- For A, N and K: the digest of each operation's payload, whether its id is new for its entity,
-- and the digests of the ids this call stores (a second copy in the same call is compared too).
local digests, fresh, pending = {}, {}, {}
-- (Since a retried call no longer marks a closed cycle twice, Y's rule and its fourth key, the
-- seen hash, are here too: a mark only with its fill, appended by this call.)
local function check_seen(i, seen_key, entity, id, payload)
  local field = seen_field(entity, id)
  local mine = digest(payload)
  local stored = pending[seen_key .. '\0' .. field] or redis.call('HGET', seen_key, field)
  if stored and stored ~= '1' and stored ~= mine then
    return redis.error_reply('CONFLICT tradecache: operation ' .. i .. ': id ' .. id ..
      ' is already stored with other content (stored digest ' .. stored .. ', this one ' .. mine .. ')')
  end
  digests[i] = mine
  fresh[i] = not stored
  return nil
end
local k, a = 1, 2
for i = 1, n do
  local op = ARGV[a]
  if nkeys[op] == nil then
    return redis.error_reply('ERR tradecache: unknown operation ' .. tostring(op))
  end
  local problem = expected[op] and check_type(KEYS[k], expected[op])
  if problem then
    return problem
  end
  if op == 'F' then
    -- The fence: this writer's lease token must be the one stored (see Lease in ingest/lease.py).
    if redis.call('GET', KEYS[k]) ~= ARGV[a + 1] then
      return redis.error_reply('FENCED tradecache: this writer does not hold the lease ' .. KEYS[k])
    end
  end
  for j, want in ipairs(others[op] or {}) do
    problem = check_type(KEYS[k + j], want)
    if problem then
      return problem
    end
  end
  if op == 'A' or op == 'N' or op == 'K' then
    local seen_key = op == 'K' and KEYS[k] or KEYS[k + 1]
    problem = check_seen(i, seen_key, ARGV[a + 1], ARGV[a + 2], ARGV[a + 3])
    if problem then
      return problem
    end
    if fresh[i] and op ~= 'K' then
      pending[seen_key .. '\0' .. seen_field(ARGV[a + 1], ARGV[a + 2])] = digests[i]
    end
  end
  k = k + nkeys[op]
  if op == 'H' or op == 'M' then
    a = a + 3 + 2 * tonumber(ARGV[a + 2])
  else
    a = a + 1 + nargs[op]
  end
end
-- Pass 2: write.
local results = {}
local now_ms = nil
k, a = 1, 2
for i = 1, n do
  local op = ARGV[a]
  a = a + 1
  if op == 'A' or op == 'N' then
    if fresh[i] then
      redis.call('HSET', KEYS[k + 1], seen_field(ARGV[a], ARGV[a + 1]), digests[i])
      if op == 'A' then
        redis.call('RPUSH', KEYS[k], ARGV[a + 2])
      else
        redis.call('SET', KEYS[k], ARGV[a + 2])
      end
      redis.call('ZADD', KEYS[k + 2], 0, ARGV[a])
      results[i] = 1
    else
      results[i] = 0
    end
    a = a + 3
  elseif op == 'K' then
    results[i] = 0  -- checked in pass 1; nothing to write
    a = a + 3
  elseif op == 'S' or op == 'R' then
    if op == 'R' then
      redis.call('DEL', KEYS[k])
    end
    redis.call('SET', KEYS[k], ARGV[a + 1])
    redis.call('ZADD', KEYS[k + 1], 0, ARGV[a])
    results[i] = 1
    a = a + 2
  elseif op == 'H' or op == 'M' then
    local count = tonumber(ARGV[a + 1])
    if op == 'H' then
      redis.call('DEL', KEYS[k])
    end
    local last = a + 1 + 2 * count
    for first = a + 2, last, 2 * HSET_PAIRS do
      redis.call('HSET', KEYS[k], unpack(ARGV, first, math.min(first + 2 * HSET_PAIRS - 1, last)))
    end
    redis.call('ZADD', KEYS[k + 1], 0, ARGV[a])
    results[i] = 1
    a = a + 2 + 2 * count
  elseif op == 'D' then
    redis.call('DEL', KEYS[k])
    redis.call('ZREM', KEYS[k + 1], ARGV[a])
    results[i] = 1
    a = a + 1
  elseif op == 'C' then
    -- The checkpoint only moves forward: a late copy of a timed-out call cannot move it back.
    local current = tonumber(redis.call('GET', KEYS[k]) or '0') or 0
    if tonumber(ARGV[a]) > current then
      redis.call('SET', KEYS[k], ARGV[a])
    end
    results[i] = 1
    a = a + 1
  elseif op == 'Z' or op == 'Y' then
    -- Closed now, by Redis' clock (the retention sweep reads the same clock).
    if now_ms == nil then
      local time = redis.call('TIME')
      now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
    end
    results[i] = 1
    if op == 'Z' then
      redis.call('ZADD', KEYS[k], now_ms, ARGV[a])
      a = a + 1
    elseif pending[KEYS[k + 3] .. '\0' .. seen_field(ARGV[a], ARGV[a + 1])] then
      -- The fill's place in the position's list since it began (what retention trimmed, plus
      -- the list's length now, minus the fills this call appended after it).
      local trimmed = tonumber(redis.call('HGET', KEYS[k + 2], ARGV[a]) or '0')
      local index = trimmed + redis.call('LLEN', KEYS[k + 1]) - tonumber(ARGV[a + 2])
      redis.call('ZADD', KEYS[k], now_ms, ARGV[a] .. '\n' .. index .. '\n' .. ARGV[a + 1])
      a = a + 3
    else
      results[i] = 0
      a = a + 3
    end
  elseif op == 'U' then
    redis.call('ZREM', KEYS[k], ARGV[a])
    results[i] = 1
    a = a + 1
  elseif op == 'P' then
    redis.call('HSET', KEYS[k], ARGV[a], ARGV[a + 1])
    results[i] = 1
    a = a + 2
  elseif op == 'Q' then
    redis.call('HDEL', KEYS[k], ARGV[a])
    results[i] = 1
    a = a + 1
  else
    results[i] = 1  -- F: checked in pass 1
    a = a + 1
  end
  k = k + nkeys[op]
end
return results
