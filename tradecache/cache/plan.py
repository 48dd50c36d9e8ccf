"""Turning `Write`s into one atomic Redis call (pure: no I/O here).

Every batch of writes, whether one `add_order` of the Python API or 256 messages of the daemon,
becomes one call of `APPLY_SCRIPT`: a small Lua interpreter of five operations. One call is one
round trip and is atomic, and FIELD-NOTES measured it ~3x faster than building the same
pipeline with redis-py. Redis does not undo a script that fails half-way, so the script first
checks everything that could fail (every key it will write has the expected type, the fence)
and refuses the whole call (WRONGTYPE, FENCED) before writing anything. Then it writes, gathered per
key: one RPUSH of all a list's new events, one HSET of all a seen hash's new fields, one ZADD per
index (a member repeated with the same score sent once), one SET per string, each in the order
the operations gave them, sent before anything reads the key (C, Y) and dropped when it is deleted or
replaced; the commands are those it always ran (an ACL user of the daemon is allowed exactly
those). A batch of 256 messages runs ~1.8 Redis commands per event instead of ~4.8 (pass 1 still
reads each event's seen field). When a key is used as two kinds in one call, or a value is not a
string, the script writes one command per write in order, as it always did (tests/data/
apply_script_before.lua is that script; tests/integration/test_apply_script_equivalence.py checks
that both give the same replies, errors and Redis contents).

The ARGV are sent packed: one msgpack array (`ScriptCall.argv`), which the script unpacks
(`cmsgpack`, built into Redis' Lua), instead of thousands of arguments that redis-py would encode
one by one (a tenth of the daemon's time under load). Strings and payloads are packed as msgpack
raw strings and integers as their decimal text, so the script sees exactly the values it would
have received as separate arguments (Redis 6.2's and 7's cmsgpack alike). A call whose ARGV are
the values themselves (the first one a decimal count) is read as it is. Each key is sent once, with
where each operation's keys are among them (`ScriptCall.packed`): a batch of 256 messages names
~1,000 keys, a third of them distinct.

Operations (KEYS are consumed in order, ARGV[1] is the number of operations):
- `F` fence: KEYS the trader's lease; ARGV the writer's token. Unless the lease holds exactly
  that token the whole call fails with `FENCED` before writing anything: a daemon that lost its
  lease (paused, cut off) can never write between another daemon's writes.
- `A` append an event if new: KEYS list, seen, index; ARGV entity id, event id, payload.
  The `seen` hash (field `<len(entity id)>:<entity id><event id>`, value a digest of the stored
  payload) makes the same event stored again for that entity a no-op (returns 0; 1 when
  written), and the same id with other content a conflict: the whole call fails with
  `CONFLICT tradecache: operation <i>: ...` before writing anything (`conflict_operation`).
- `K` check a duplicate the caller already knows is one: KEYS seen; ARGV entity id, event id,
  payload. Fails the call with CONFLICT when the stored digest differs; writes nothing.
- `S` set a string: KEYS key, index; ARGV entity id, payload.
- `N` set a string if its id is new (commands): KEYS key, seen, index; ARGV entity id,
  command id, payload; returns 1 or 0 and conflicts like `A`.
- `R` replace whatever the key holds by a string: KEYS key, index; ARGV entity id, payload
  (the nautilus layout's currencies and strategy state, which may replace the seed form).
- `H` replace whatever the key holds by a hash / `M` merge into a hash: KEYS key, index; ARGV
  entity id, field count, fields (written 1,000 fields per HSET: any number of fields works).
- `D` delete an entity: KEYS key, index; ARGV entity id.
- `C` set the checkpoint if it is higher than the stored one: KEYS key; ARGV value.
- `Z` an order closed (retention): KEYS the orders' closed set; ARGV the order id. Its score
  becomes Redis' clock in milliseconds (`cache/retention.py` purges by it).
- `U` an order reopened: KEYS the orders' closed set; ARGV the order id (removed from it).
- `Y` a position went flat: KEYS the positions' closed set, the position's list, the trimmed
  counts, the positions' seen hash; ARGV position id, the fill's event id, fills of the same call
  after it. Adds a `cycle_member` scored by Redis' clock, only when an `A` of the same call
  appends that fill (a call run again after its answer was lost appends nothing and marks
  nothing; reply 0).
- `E` an order the writer took for new without reading it (its OrderInitialized, and memory
  lacks it): KEYS the order's list, the orders' purged set; ARGV the order id. Unless the list is
  absent and retention never purged that id, the whole call fails with `ASSUMED tradecache: ...`
  before writing anything; the writer then reads the order and applies the batch again. Writes
  nothing.
- `P` hold the opening half of a flip until the node's PositionOpened names its position: KEYS the
  trader's pending-openings hash; ARGV the opening order id, the half's payload. `Q` let it go:
  KEYS the same hash; ARGV the opening order id.
Indexes are sorted sets with score 0 (ordered by id, for paging); see `Keys.index`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import msgpack

from tradecache.cache.keys import Keys, Layout
from tradecache.model.events import AccountState, OrderEvent, OrderFilled, SubmitOrder, SubmitOrderList
from tradecache.model.ledger import Collection, Mark, Write, WriteOp
from tradecache.model.messages import Message
from tradecache.model.values import Currency


@dataclass(frozen=True, slots=True)
class Operation:
    """The shape of one `APPLY_SCRIPT` operation: the type its first key must have (None: any, it
    is replaced or deleted), the types of its other keys, and how many ARGV it takes after its
    letter (None: counted by the script, as `H`/`M` carry a field count)."""

    first: str | None
    others: tuple[str, ...]
    nargs: int | None

    @property
    def nkeys(self) -> int:
        return 1 + len(self.others)


# The one declaration of the operations: the script's tables below are generated from it, and
# `ScriptCall` adds exactly these many KEYS and ARGV per operation (tests/unit/test_extension_points.py).
OPERATIONS: Final[dict[str, Operation]] = {
    "A": Operation("list", ("hash", "zset"), 3),
    "S": Operation("string", ("zset",), 2),
    "N": Operation("string", ("hash", "zset"), 3),
    "R": Operation(None, ("zset",), 2),
    "H": Operation(None, ("zset",), None),
    "M": Operation("hash", ("zset",), None),
    "D": Operation(None, ("zset",), 1),
    "C": Operation("string", (), 1),
    "F": Operation("string", (), 1),
    "K": Operation("hash", (), 3),
    "Z": Operation("zset", (), 1),
    "U": Operation("zset", (), 1),
    "Y": Operation("zset", ("list", "hash", "hash"), 3),
    "E": Operation(None, ("zset",), 1),
    "P": Operation("hash", (), 2),
    "Q": Operation("hash", (), 1),
}


def _lua_table(name: str, entries: list[tuple[str, str]], width: int = 120) -> str:
    """`local name = {A = x, B = y}`, wrapped before `width` columns, continued under the first entry."""
    head = f"local {name} = {{"
    items = [f"{op} = {value}" for op, value in entries]
    lines, line = [], head
    for i, item in enumerate(items):
        text = item + ("}" if i == len(items) - 1 else ",")
        if line != head and len(line) + 1 + len(text) > width:
            lines.append(line)
            line = " " * len(head) + text
        else:
            line = line + text if line == head else f"{line} {text}"
    lines.append(line)
    return "\n".join(lines)


def _operation_tables() -> str:
    def quoted(kind: str | None) -> str:
        return "false" if kind is None else f"'{kind}'"

    expected = [(op, quoted(shape.first)) for op, shape in OPERATIONS.items()]
    others = [
        (op, "{" + ", ".join(quoted(kind) for kind in shape.others) + "}")
        for op, shape in OPERATIONS.items()
        if shape.others
    ]
    nkeys = [(op, str(shape.nkeys)) for op, shape in OPERATIONS.items()]
    nargs = [(op, str(shape.nargs)) for op, shape in OPERATIONS.items() if shape.nargs is not None]
    return (
        "-- The type an operation's first key must have (false: any, it is replaced or deleted).\n"
        f"{_lua_table('expected', expected)}\n"
        "-- The types of an operation's other keys: a dedupe hash and an index, or nothing.\n"
        f"{_lua_table('others', others)}\n"
        f"{_lua_table('nkeys', nkeys)}\n"
        f"{_lua_table('nargs', nargs)}"
    )


APPLY_SCRIPT: Final = (
    "\n"
    + _operation_tables()
    + """
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
-- Whether pass 2 may gather its writes per key (see there): true unless some key is used as two
-- kinds (a list and a hash, ...; R makes a string, H a hash, D any) or some value it would write is
-- not a string or some number it reads is not one. Otherwise it writes one by one as it always did.
local gather_ok, replaced = true, {}  -- replaced: what R and H make of a key (a string, a hash)
local checked = {}
local function check_type(key, want)
  if checked[key] == want then
    return nil
  end
  local have = redis.call('TYPE', key)['ok']
  if have ~= 'none' and have ~= want then
    return redis.error_reply('WRONGTYPE tradecache: ' .. key .. ' holds a ' .. have .. ', not a ' .. want)
  end
  if checked[key] or (replaced[key] and replaced[key] ~= want) then
    gather_ok = false  -- one key, two kinds
  end
  checked[key] = want
  return nil
end
-- For A, N and K: the digest of each operation's payload, whether its id is new for its entity,
-- and the digests of the ids this call stores (a second copy in the same call is compared too).
local digests, fresh, pending, fields = {}, {}, {}, {}
local function check_seen(i, seen_key, entity, id, payload, stores)
  local field = seen_field(entity, id)
  fields[i] = field
  local mine = digest(payload)
  local where = seen_key .. '\\0' .. field
  local stored = pending[where] or redis.call('HGET', seen_key, field)
  if stored and stored ~= '1' and stored ~= mine then
    return redis.error_reply('CONFLICT tradecache: operation ' .. i .. ': id ' .. id ..
      ' is already stored with other content (stored digest ' .. stored .. ', this one ' .. mine .. ')')
  end
  digests[i] = mine
  fresh[i] = not stored
  if stores and not stored then
    pending[where] = mine
  end
  return nil
end
local argc = #ARGV
-- For E: whether retention purged `id` (its purged set looked up only once it exists).
local purged_kind = {}
local function purged(key, id)
  local kind = purged_kind[key]
  if kind == nil then
    kind = redis.call('TYPE', key)['ok']
    purged_kind[key] = kind
  end
  return kind == 'zset' and redis.call('ZMSCORE', key, id)[1] ~= false
end
-- A key that R (kind 'string'), H ('hash') or D (nil: any) replaces or deletes, whatever it held.
local function replaces(key, kind)
  if key == nil then
    gather_ok = false
  elseif kind then
    if (checked[key] and checked[key] ~= kind) or (replaced[key] and replaced[key] ~= kind) then
      gather_ok = false
    end
    replaced[key] = kind
  end
end
-- The values an operation other than A and K writes: strings, and numbers where C and Y read one.
local function check_values(op, k, a)
  if op == 'R' or op == 'H' or op == 'D' then
    replaces(KEYS[k], op == 'R' and 'string' or op == 'H' and 'hash' or nil)
  end
  local last = a + (nargs[op] or 0)
  if op == 'H' or op == 'M' then
    local count = tonumber(ARGV[a + 2])
    if not count or count < 0 or count % 1 ~= 0 then
      gather_ok = false
      return
    end
    last = a + 2 + 2 * count
  end
  if last > argc then
    gather_ok = false
    return
  end
  for j = a + 1, last do
    if type(ARGV[j]) ~= 'string' then
      gather_ok = false
    end
  end
  if (op == 'C' and not tonumber(ARGV[a + 1])) or (op == 'Y' and not tonumber(ARGV[a + 3])) then
    gather_ok = false
  end
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
  if op == 'E' and (redis.call('TYPE', KEYS[k])['ok'] ~= 'none' or purged(KEYS[k + 1], ARGV[a + 1])) then
    return redis.error_reply('ASSUMED tradecache: order ' .. ARGV[a + 1] .. ' was taken for new and is stored')
  end
  if op == 'A' or op == 'N' or op == 'K' then
    local seen_key = op == 'K' and KEYS[k] or KEYS[k + 1]
    problem = check_seen(i, seen_key, ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], op ~= 'K')
    if problem then
      return problem
    end
  end
  if op == 'A' then
    if type(ARGV[a + 3]) ~= 'string' then  -- the entity is one (#), the id a string or a number
      gather_ok = false
    end
  elseif op ~= 'K' then
    check_values(op, k, a)
  end
  k = k + nkeys[op]
  if op == 'H' or op == 'M' then
    a = a + 3 + 2 * tonumber(ARGV[a + 2])
  else
    a = a + 1 + nargs[op]
  end
end
-- For Y: whether this call appends the event `id` to `entity` (a fresh A; its seen hash given).
-- A closed cycle is marked only with its fill: a call run again (retried, its answer lost)
-- appends nothing, and the list's length would no longer give the fill's place.
local function appends(seen_key, entity, id)
  return pending[seen_key .. '\\0' .. seen_field(entity, id)] ~= nil
end
-- Pass 2: write. Either one command per write, in the order of the operations (write_in_order), or
-- the same writes gathered per key (write_gathered): one RPUSH / HSET / ZADD / ZREM / HDEL per key
-- and run of the same command, in the order they came, then one SET per string. A key's
-- gathered writes go out before anything reads it (C, Y) and are dropped when it is deleted or
-- replaced (DEL, R, H), so every key ends as written one by one: commands on different keys do
-- not depend on each other's order. Only when pass 1 left `gather_ok` true: then no command can
-- fail half-way (each key has one kind; every value is a string), the one exception being a Y
-- whose trimmed count is not a number, which first sends everything gathered, then fails as before.
local function write_in_order()
  local results = {}
  local now_ms = nil
  local k, a = 1, 2
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
      elseif appends(KEYS[k + 3], ARGV[a], ARGV[a + 1]) then
        -- The fill's place in the position's list since it began (what retention trimmed, plus
        -- the list's length now, minus the fills this call appended after it).
        local trimmed = tonumber(redis.call('HGET', KEYS[k + 2], ARGV[a]) or '0')
        local index = trimmed + redis.call('LLEN', KEYS[k + 1]) - tonumber(ARGV[a + 2])
        redis.call('ZADD', KEYS[k], now_ms, ARGV[a] .. '\\n' .. index .. '\\n' .. ARGV[a + 1])
        a = a + 3
      else
        results[i] = 0  -- its fill was stored before this call (a retry): so was this mark
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
end
-- Values per command sent: Lua's unpack() refuses more than ~8,000 at once (even: pairs stay whole).
local CHUNK = 2000
local runs, run_keys, strings, string_keys = {}, {}, {}, {}
local function send(command, key, values, count)
  for first = 1, count, CHUNK do
    redis.call(command, key, unpack(values, first, math.min(first + CHUNK - 1, count)))
  end
end
-- The writes gathered for `key`, sent now (before it is read).
local function flush(key)
  local run = runs[key]
  if run then
    runs[key] = nil
    send(run.command, key, run, run.n)
  end
  local value = strings[key]
  if value then
    strings[key] = nil
    redis.call('SET', key, value)
  end
end
-- The writes gathered for a key about to be deleted or replaced: never sent.
local function drop(key)
  runs[key] = nil
  strings[key] = nil
end
local function flush_all()
  for _, key in ipairs(run_keys) do
    local run = runs[key]
    if run then  -- a key listed twice (flushed, then gathered again) is sent once per run
      runs[key] = nil
      send(run.command, key, run, run.n)
    end
  end
  run_keys = {}
  local values, count = {}, 0
  for _, key in ipairs(string_keys) do
    local value = strings[key]
    if value then
      strings[key] = nil
      values[count + 1], values[count + 2] = key, value
      count = count + 2
    end
  end
  string_keys = {}
  -- One SET each, not MSET: the script calls no command it did not call before (an ACL user of
  -- the daemon is allowed exactly those), and strings are few (commands, the checkpoint).
  for j = 1, count, 2 do
    redis.call('SET', values[j], values[j + 1])
  end
end
-- The run of `command` on `key` that values are added to: a new one when the key has none or one
-- of another command, which is sent first (what came before goes first).
local function run_of(command, key)
  local run = runs[key]
  if run and run.command == command then
    return run
  end
  if run then
    flush(key)
  end
  run = {command = command, n = 0, scores = command == 'ZADD' and {} or nil}
  runs[key] = run
  run_keys[#run_keys + 1] = key
  return run
end
-- One or two more values (a pair: field and value) for `command` on `key`.
local function gather(command, key, first, second)
  local run = run_of(command, key)
  local count = run.n + 1
  run[count] = first
  if second ~= nil then
    count = count + 1
    run[count] = second
  end
  run.n = count
end
-- A ZADD pair (every ZADD goes through here): one that repeats the score the key's run last gave
-- that member (an index entry per event of the same entity) changes nothing and is not sent.
local function gather_score(key, score, member)
  local run = run_of('ZADD', key)
  if run.scores[member] ~= score then
    local count = run.n
    run[count + 1], run[count + 2] = score, member
    run.n = count + 2
    run.scores[member] = score
  end
end
-- SET replaces whatever the key holds (type and expiry too): the last value is the one stored.
local function set(key, value)
  runs[key] = nil
  if not strings[key] then
    string_keys[#string_keys + 1] = key
  end
  strings[key] = value
end
local function write_gathered()
  local results = {}
  local now_ms = nil
  local k, a = 1, 2
  for i = 1, n do
    local op = ARGV[a]
    a = a + 1
    if op == 'A' or op == 'N' then
      if fresh[i] then
        gather('HSET', KEYS[k + 1], fields[i], digests[i])
        if op == 'A' then
          gather('RPUSH', KEYS[k], ARGV[a + 2])
        else
          set(KEYS[k], ARGV[a + 2])
        end
        gather_score(KEYS[k + 2], 0, ARGV[a])
        results[i] = 1
      else
        results[i] = 0
      end
      a = a + 3
    elseif op == 'K' then
      results[i] = 0  -- checked in pass 1; nothing to write
      a = a + 3
    elseif op == 'S' or op == 'R' then
      set(KEYS[k], ARGV[a + 1])  -- R: the SET replaces whatever the key held
      gather_score(KEYS[k + 1], 0, ARGV[a])
      results[i] = 1
      a = a + 2
    elseif op == 'H' or op == 'M' then
      local count = tonumber(ARGV[a + 1])
      if op == 'H' then
        drop(KEYS[k])
        redis.call('DEL', KEYS[k])
      end
      for field = a + 2, a + 1 + 2 * count, 2 do
        gather('HSET', KEYS[k], ARGV[field], ARGV[field + 1])
      end
      gather_score(KEYS[k + 1], 0, ARGV[a])
      results[i] = 1
      a = a + 2 + 2 * count
    elseif op == 'D' then
      drop(KEYS[k])
      redis.call('DEL', KEYS[k])
      gather('ZREM', KEYS[k + 1], ARGV[a])
      results[i] = 1
      a = a + 1
    elseif op == 'C' then
      -- The checkpoint only moves forward: a late copy of a timed-out call cannot move it back.
      flush(KEYS[k])
      local current = tonumber(redis.call('GET', KEYS[k]) or '0') or 0
      if tonumber(ARGV[a]) > current then
        set(KEYS[k], ARGV[a])
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
        gather_score(KEYS[k], now_ms, ARGV[a])
        a = a + 1
      elseif appends(KEYS[k + 3], ARGV[a], ARGV[a + 1]) then
        -- The fill's place in the position's list since it began (what retention trimmed, plus
        -- the list's length now, minus the fills this call appended after it).
        flush(KEYS[k + 1])
        flush(KEYS[k + 2])
        local stored = redis.call('HGET', KEYS[k + 2], ARGV[a])
        local trimmed = tonumber(stored or '0')
        if trimmed == nil then
          flush_all()  -- the line below fails: with everything before it written, as in order
        end
        local index = trimmed + redis.call('LLEN', KEYS[k + 1]) - tonumber(ARGV[a + 2])
        gather_score(KEYS[k], now_ms, ARGV[a] .. '\\n' .. index .. '\\n' .. ARGV[a + 1])
        a = a + 3
      else
        results[i] = 0  -- its fill was stored before this call (a retry): so was this mark
        a = a + 3
      end
    elseif op == 'U' then
      gather('ZREM', KEYS[k], ARGV[a])
      results[i] = 1
      a = a + 1
    elseif op == 'P' then
      gather('HSET', KEYS[k], ARGV[a], ARGV[a + 1])
      results[i] = 1
      a = a + 2
    elseif op == 'Q' then
      gather('HDEL', KEYS[k], ARGV[a])
      results[i] = 1
      a = a + 1
    else
      results[i] = 1  -- F: checked in pass 1
      a = a + 1
    end
    k = k + nkeys[op]
  end
  flush_all()
  return results
end
if gather_ok then
  return write_gathered()
end
return write_in_order()
"""
)

# Reads a batch of entities in one call: for each KEYS[i], ARGV[i] (or ARGV[1] when it is the
# only one) says LRANGE, HGETALL, GET, TYPED (a hash or a string, whichever the key holds),
# HGET followed by a newline and the field (one field of a hash, or false), or HGETALL followed by
# a newline and a number (the hash, or false when it has more fields than that: not sent).
# (A redis-py pipeline of 10k LRANGEs spends ~0.1 s
# building commands in Python.)
READ_SCRIPT: Final = """
local out = {}
for i, key in ipairs(KEYS) do
  local command = ARGV[i] or ARGV[1]
  if command == 'LRANGE' then
    out[i] = redis.call('LRANGE', key, 0, -1)
  elseif command == 'HGETALL' then
    out[i] = redis.call('HGETALL', key)
  elseif string.sub(command, 1, 8) == 'HGETALL\\n' then
    local all = redis.call('HGETALL', key)
    if #all > 2 * tonumber(string.sub(command, 9)) then
      out[i] = false
    else
      out[i] = all
    end
  elseif string.sub(command, 1, 5) == 'HGET\\n' then
    out[i] = redis.call('HGET', key, string.sub(command, 6)) or false
  elseif command == 'TYPED' then
    -- A key that is a hash in one layout and a string in the other: {type, value} or false.
    local kind = redis.call('TYPE', key)['ok']
    if kind == 'hash' then
      out[i] = {kind, redis.call('HGETALL', key)}
    elseif kind == 'string' then
      out[i] = {kind, redis.call('GET', key)}
    else
      out[i] = false
    end
  else
    out[i] = redis.call('GET', key) or false
  end
end
return out
"""
# Keys per READ_SCRIPT call: bounds the time one call holds Redis (~10 ms).
READ_CHUNK: Final = 5000
# How each collection's entities are read (the READ_SCRIPT command).
READ_COMMANDS: Final[dict[Collection, str]] = {
    Collection.CURRENCIES: "TYPED",
    Collection.INSTRUMENTS: "GET",
    Collection.ACCOUNTS: "LRANGE",
    Collection.ORDERS: "LRANGE",
    Collection.POSITIONS: "LRANGE",
    Collection.STRATEGIES: "HGETALL",
    Collection.SUBMIT_ORDER: "GET",
    Collection.SUBMIT_ORDER_LIST: "GET",
}


def as_text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def read_result(command: str, value: Any) -> Any:
    """READ_SCRIPT's answer for one key in the shape redis-py gives that command: a list of
    bytes (LRANGE), bytes or None (GET), a {field: bytes} dict (HGETALL); TYPED gives a dict
    for a hash, bytes for a string, None when absent."""
    if command == "TYPED":
        if not value:
            return None
        kind, stored = value
        return read_result("HGETALL", stored) if as_text(kind) == "hash" else stored
    if command == "HGETALL":
        return {as_text(field): item for field, item in zip(value[::2], value[1::2], strict=True)}
    if command == "GET":
        return value or None
    return list(value)


Encoder = Callable[[Message], bytes]


@dataclass
class ScriptCall:
    """The KEYS and ARGV of one `APPLY_SCRIPT` call, built up operation by operation."""

    keys: list[str] = field(default_factory=list)
    args: list[bytes | str | int] = field(default_factory=lambda: [0])
    operations: list[Write | None] = field(default_factory=list)  # None for the checkpoint

    @property
    def count(self) -> int:
        return len(self.operations)

    def _add(self, write: Write | None, keys: Sequence[str], op: str, *args: bytes | str | int) -> None:
        self.keys.extend(keys)
        self.args.append(op)
        self.args.extend(args)
        self.operations.append(write)
        self.args[0] = len(self.operations)

    def append_event(self, write: Write, keys: Keys, event_id: str, payload: bytes) -> None:
        # The operation of most messages: its key names come prebuilt (`Keys.appended`), its
        # lists are extended in place rather than through `_add`.
        entity, seen, index = keys.appended(write.collection)
        self.keys += (entity + write.key, seen, index)
        self.args += ("A", write.key, event_id, payload)
        self.operations.append(write)
        self.args[0] = len(self.operations)

    def check_event(self, write: Write, keys: Keys, event_id: str, payload: bytes) -> None:
        """A duplicate the ledger recognised: the call fails (CONFLICT) if the stored one differs."""
        self._add(write, (keys.seen(write.collection),), "K", write.key, event_id, payload)

    def closed(self, mark: Mark, keys: Keys) -> None:
        if mark.event_id:  # a position's closed cycle
            collection = mark.collection
            names = (
                keys.closed(collection), keys.entity(collection, mark.key), keys.trimmed(collection),
                keys.seen(collection),
            )  # fmt: skip
            self._add(None, names, "Y", mark.key, mark.event_id, mark.later)
        else:
            self._add(None, (keys.closed(mark.collection),), "Z" if mark.closed else "U", mark.key)

    def set_command(self, write: Write, keys: Keys, command_id: str, payload: bytes) -> None:
        names = (keys.entity(write.collection, write.key), keys.seen(write.collection), keys.index(write.collection))
        self._add(write, names, "N", write.key, command_id, payload)

    def set_value(self, write: Write, keys: Keys, payload: bytes) -> None:
        self._add(
            write, (keys.entity(write.collection, write.key), keys.index(write.collection)), "S", write.key, payload
        )

    def replace_value(self, write: Write, keys: Keys, key: str, payload: bytes) -> None:
        self._add(write, (key, keys.index(write.collection)), "R", write.key, payload)

    def delete_key(self, write: Write, keys: Keys, key: str) -> None:
        self._add(write, (key, keys.index(write.collection)), "D", write.key)

    def set_hash(self, write: Write, keys: Keys, fields: dict[str, bytes | str], *, replace: bool) -> None:
        flat: list[bytes | str] = []
        for name, value in fields.items():
            flat.extend((name, value))
        names = (keys.entity(write.collection, write.key), keys.index(write.collection))
        self._add(write, names, "H" if replace else "M", write.key, len(fields), *flat)

    def delete(self, write: Write, keys: Keys) -> None:
        self._add(write, (keys.entity(write.collection, write.key), keys.index(write.collection)), "D", write.key)

    def expect_new(self, keys: Keys, order_id: str) -> None:
        """The call fails (ASSUMED) unless the order `order_id` is not stored and was never purged."""
        names = (keys.entity(Collection.ORDERS, order_id), keys.purged(Collection.ORDERS))
        self._add(None, names, "E", order_id)

    def hold_opening(self, keys: Keys, opening_order_id: str, payload: bytes) -> None:
        self._add(None, (keys.pending_openings(),), "P", opening_order_id, payload)

    def release_opening(self, keys: Keys, opening_order_id: str) -> None:
        self._add(None, (keys.pending_openings(),), "Q", opening_order_id)

    def checkpoint(self, keys: Keys, sequence: int) -> None:
        self._add(None, (keys.checkpoint(),), "C", sequence)

    @property
    def argv(self) -> list[bytes]:
        """The ARGV as sent: one msgpack array of the values, integers as decimal text (what redis-py
        would have sent for each), strings and bytes as msgpack raw strings."""
        values = [str(value) if value.__class__ is int else value for value in self.args]
        packed: bytes = msgpack.packb(values, use_bin_type=False)
        return [packed]

    def packed(self) -> tuple[list[str], list[bytes]]:
        """KEYS and ARGV as sent: each key named once (most operations share the dedupe hash and
        the index), then the values packed (`argv`) and where each operation's key is in KEYS."""
        position: dict[str, int] = {}
        where = [position.setdefault(key, len(position) + 1) for key in self.keys]
        indexes: bytes = msgpack.packb(where)
        return list(position), [*self.argv, indexes]

    def mark(self) -> tuple[int, int, int]:
        """Where the call ends now, for `rewind`."""
        return len(self.keys), len(self.args), len(self.operations)

    def rewind(self, mark: tuple[int, int, int]) -> None:
        """Drop the operations added since `mark` (those of a message that failed half-way)."""
        keys, args, operations = mark
        del self.keys[keys:]
        del self.args[args:]
        del self.operations[operations:]
        self.args[0] = len(self.operations)

    def fence(self, keys: Keys, token: str) -> None:
        """Make the whole call conditional on the trader's lease holding `token`."""
        self._add(None, (keys.lease(),), "F", token)

    @property
    def writes(self) -> int:
        """Operations that change entities (neither the checkpoint nor the fence)."""
        return sum(1 for write in self.operations if write is not None)

    def unchanged(self, results: Sequence[int]) -> list[Write]:
        """The writes the script found already stored (an event or command id seen before)."""
        return [
            write
            for write, result in zip(self.operations, results, strict=True)
            if write is not None and int(result) == 0
        ]


def currency_fields(currency: Currency) -> dict[str, bytes | str]:
    """A currency as NautilusTrader's cache stores it: a hash without the code (it is in the key)."""
    return {
        "precision": str(currency.precision),
        "iso4217": str(currency.iso4217),
        "name": currency.name,
        "currency_type": currency.currency_type.name,
    }


def packb(value: dict[str, Any]) -> bytes:
    packed: bytes = msgpack.packb(value, use_bin_type=True)
    return packed


def nautilus_currency(currency: Currency) -> bytes:
    """A currency as NautilusTrader >= 1.221 stores it: a msgpack map without the code (it is in
    the key), precision and ISO 4217 number as integers."""
    return packb(
        {
            "precision": currency.precision,
            "iso4217": currency.iso4217,
            "name": currency.name,
            "currency_type": currency.currency_type.name,
        }
    )


def plan_strategy(write: Write, keys: Keys, call: ScriptCall) -> None:
    """A strategy state write in the configured layout; the other layout's key is deleted first
    so that no reader, ours or a node's, ever finds a stale copy in the other form."""
    this, other = keys.strategy_states(write.key)
    call.delete_key(write, keys, other)
    if write.op == WriteOp.DELETE:
        call.delete_key(write, keys, this)
    elif keys.layout == Layout.NAUTILUS:
        # NautilusTrader stores the whole state map and replaces it on every save.
        assert isinstance(write.value, dict)
        call.replace_value(write, keys, this, packb(dict(write.value)))
    else:
        assert isinstance(write.value, dict)
        call.set_hash(write, keys, dict(write.value), replace=False)


def cycle_member(position_id: str, index: int, event_id: str) -> str:
    """A member of the positions' closed set: the position, how many fills it had received when
    that fill made it flat (counted since its list began, trimmed ones included), and the fill's
    event id, newline-separated (ids hold no control character)."""
    return f"{position_id}\n{index}\n{event_id}"


_CONFLICT: Final = re.compile(r"^CONFLICT tradecache: operation (\d+): (.*)$", re.DOTALL)


ASSUMED_MARK: Final = "ASSUMED tradecache:"


def assumption_failed(cause: str) -> bool:
    """Whether a refusal says an order taken for new (`E`) is stored: nothing was written."""
    return cause.startswith(ASSUMED_MARK)


def conflict_operation(cause: str) -> tuple[int, str] | None:
    """For a CONFLICT refusal: the index (from 0) in `ScriptCall.operations` of the operation it
    names, and what it says about it; None for any other refusal."""
    found = _CONFLICT.match(cause)
    return None if found is None else (int(found.group(1)) - 1, found.group(2))


def plan_checks(checks: Sequence[Write], keys: Keys, encode: Encoder, call: ScriptCall) -> None:
    """Duplicates recognised in memory, checked against what the store holds (`K`)."""
    for check in checks:
        value = check.value
        assert value is not None and not isinstance(value, dict)
        call.check_event(check, keys, _stored_id_of(value), encode(value))


def plan_openings(held: Sequence[OrderFilled], released: Sequence[str], keys: Keys, encode: Encoder,
                  call: ScriptCall) -> None:  # fmt: skip
    """Store the opening halves an outcome holds and forget those it released (see `Outcome`)."""
    for opening in held:
        call.hold_opening(keys, opening.client_order_id.value, encode(opening))
    for opening_order_id in released:
        call.release_opening(keys, opening_order_id)


def plan_marks(marks: Sequence[Mark], keys: Keys, call: ScriptCall) -> None:
    """Entities that closed or reopened: the closed sets retention purges from."""
    for mark in marks:
        call.closed(mark, keys)


def _stored_id_of(value: Message) -> str:
    return value.command_id if isinstance(value, (SubmitOrder, SubmitOrderList)) else event_id_of(value)


def event_id_of(value: Message) -> str:
    if isinstance(value, (OrderEvent, AccountState)):
        return value.event_id
    raise TypeError(f"{type(value).__name__} is not an event that can be appended")


def plan_writes(writes: Sequence[Write], keys: Keys, encode: Encoder, call: ScriptCall | None = None) -> ScriptCall:
    """Add `writes` to a script call (a new one unless `call` is given) and return it."""
    call = call if call is not None else ScriptCall()
    for write in writes:
        value = write.value
        if write.op == WriteOp.APPEND:
            assert value is not None and not isinstance(value, dict)
            call.append_event(write, keys, event_id_of(value), encode(value))
        elif write.collection == Collection.STRATEGIES:
            plan_strategy(write, keys, call)
        elif write.op == WriteOp.SET and write.collection == Collection.CURRENCIES:
            assert isinstance(value, Currency)
            if keys.layout == Layout.NAUTILUS:
                call.replace_value(write, keys, keys.entity(write.collection, write.key), nautilus_currency(value))
            else:
                call.set_hash(write, keys, currency_fields(value), replace=True)
        elif write.op == WriteOp.SET and isinstance(value, (SubmitOrder, SubmitOrderList)):
            call.set_command(write, keys, value.command_id, encode(value))
        elif write.op == WriteOp.SET:
            assert value is not None and not isinstance(value, dict)
            call.set_value(write, keys, encode(value))
        elif write.op == WriteOp.MERGE:
            assert isinstance(value, dict)
            call.set_hash(write, keys, dict(value), replace=False)
        else:
            call.delete(write, keys)
    return call


__all__ = [
    "APPLY_SCRIPT",
    "ASSUMED_MARK",
    "OPERATIONS",
    "READ_CHUNK",
    "READ_SCRIPT",
    "Encoder",
    "Operation",
    "ScriptCall",
    "assumption_failed",
    "conflict_operation",
    "currency_fields",
    "cycle_member",
    "event_id_of",
    "nautilus_currency",
    "plan_checks",
    "plan_marks",
    "plan_openings",
    "plan_strategy",
    "plan_writes",
]
