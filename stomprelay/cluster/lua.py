"""Lua steps of the Redis registry: each one atomic, each on the keys of one slot.

A step is one script run with EVALSHA. Every key it touches is passed in
KEYS, and all of them share one hash tag (one room's, one session's or one
relay's; :mod:`keys`), so the same scripts run on a single Redis, under
Sentinel and on Redis Cluster. How the steps make up the registry's
operations, and why each order is safe to interrupt, is in ``operations.py``;
the envelopes they publish are made in Python (``registry.py``), so a step only
fills in what it alone knows: a room's participant count, a log's offset.

``ROOM_PUBLISH`` is ``PUBLISH`` on one Redis and ``SPUBLISH`` on a cluster, where
a room's channels carry the room's tag and live on its shard; session events
always go out with ``PUBLISH`` (cluster-wide).
"""

from __future__ import annotations

LIBRARY = r"""
local function script_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), t
end

local function new_epoch()
  local _, t = script_now()
  return string.format('%x%06d', tonumber(t[1]), tonumber(t[2]))
end

-- The log's epoch ('' when there is no log). Where masters change (Sentinel,
-- Cluster), the meta hash names the master (its replication id) that wrote the
-- log. A master that took over holds what was replicated, but cannot know what
-- the old master acknowledged after it: the log goes on under a new epoch, noting
-- the epoch it continues and its last offset here ('parent', 'since'), so no
-- (epoch, offset) ever names two different messages and a follower can tell what
-- it already has. On a cluster a node the slot was moved to (MIGRATE carries the
-- keys whole) adopts the log as it is, if it never was a replica that took over.
local function current_epoch(meta)
  local epoch = redis.call('HGET', meta, 'epoch')
  if not epoch or not EPOCH_PER_MASTER then return epoch or '' end
  local info = redis.call('INFO', 'replication')
  local here = string.match(info, 'master_replid:(%w+)') or ''
  local was = redis.call('HGET', meta, 'master')
  -- Under Sentinel nothing else moves a log: any new master is a takeover (one hop
  -- or several). On a cluster a node that was ever promoted (replid2 set) may hold a
  -- log it took over; only a never-promoted one adopts a log a migration brought.
  local replid2 = string.match(info, 'master_replid2:(%w+)') or ''
  local promoted = not string.match(replid2, '^0+$')
  if was and was ~= here and (not EPOCH_ADOPT_MOVED or promoted) then
    local next_epoch = new_epoch()
    redis.call('HSET', meta, 'epoch', next_epoch, 'parent', epoch,
      'since', redis.call('HGET', meta, 'seq') or 0)
    epoch = next_epoch
  end
  if was ~= here then redis.call('HSET', meta, 'master', here) end
  return epoch
end

local function master_id()
  return string.match(redis.call('INFO', 'replication'), 'master_replid:(%w+)') or ''
end

-- Retention (docs/history.md): the last HISTORY_SIZE entries, and also every
-- entry younger than HISTORY_MIN_AGE_MS, never more than HISTORY_MAX_SIZE. Ids
-- are '<offset>-0', so age is read from each entry's 't' (its third field; an
-- entry written without one counts as old). The oldest go first, up to 64 an
-- append (XTRIM MINID); at steady state an append looks at one entry.
local function log_trim(stream, now)
  local length = redis.call('XLEN', stream)
  if length > HISTORY_MAX_SIZE then
    redis.call('XTRIM', stream, 'MAXLEN', HISTORY_MAX_SIZE)
    length = HISTORY_MAX_SIZE
  end
  local excess = length - HISTORY_SIZE
  if excess <= 0 then return end
  local function young(entry) return now - (tonumber(entry[2][6]) or 0) < HISTORY_MIN_AGE_MS end
  local oldest = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)
  if #oldest == 0 or young(oldest[1]) then return end
  local cut = nil
  for _, entry in ipairs(redis.call('XRANGE', stream, '-', '+', 'COUNT', math.min(excess, 64))) do
    if young(entry) then break end
    cut = (tonumber(string.match(entry[1], '^(%d+)')) + 1) .. '-0'
  end
  redis.call('XTRIM', stream, 'MINID', cut)
end

-- A message's message.published event (webhook_steps.MessageEvent): head .. offset
-- .. tail, or without its last field (',"offset":', 10 characters) when not logged.
local function message_published(hook, head, tail, offset)
  if not hook then return end
  local text
  if offset > 0 then text = head .. offset .. tail else text = string.sub(head, 1, -11) .. tail end
  redis.call('XADD', hook, '*', 'e', text)
end

-- Append env (an envelope JSON object without offset) to the log whose keys are
-- stream, meta, ids, and publish it on channel with "offset" and "epoch" in front,
-- in this one step. Idempotent by message id mid: a known id returns its offset
-- and publishes nothing. logged false: publish only (offset 0). hook (a webhook
-- stream, or nil), head, tail: its message.published event, appended with it.
-- Returns epoch, offset, duplicate.
local function log_append(stream, meta, ids, channel, env, mid, ts, logged, hook, head, tail)
  if not logged or HISTORY_SIZE <= 0 then
    redis.call(ROOM_PUBLISH, channel, env)
    if hook then message_published(hook, head, tail, 0) end
    return '', 0, false
  end
  local epoch = current_epoch(meta)
  if epoch ~= '' then
    local known = redis.call('ZSCORE', ids, mid)
    if known then return epoch, tonumber(known), true end
  else
    epoch = new_epoch()
    redis.call('DEL', stream, ids)
    redis.call('DEL', meta)
    redis.call('HSET', meta, 'epoch', epoch, 'seq', 0, 'created-at', ts)
    if EPOCH_PER_MASTER then redis.call('HSET', meta, 'master', master_id()) end
  end
  local offset = redis.call('HINCRBY', meta, 'seq', 1)
  -- 't' is Redis's own time of the append (not the SEND's): a journal appended
  -- after a long outage counts as young
  local appended = script_now()
  redis.call('XADD', stream, offset .. '-0', 'i', mid, 'e', env, 't', appended)
  log_trim(stream, appended)
  -- ids outlive their entries (HISTORY_ID_WINDOW appends), so a journal replayed
  -- after a long outage still finds an append that did run
  redis.call('ZADD', ids, offset, mid)
  redis.call('ZREMRANGEBYSCORE', ids, '-inf', offset - HISTORY_ID_WINDOW)
  redis.call('HSET', meta, 'last-at', ts)
  for _, key in ipairs({stream, meta, ids}) do redis.call('PEXPIRE', key, HISTORY_TTL_MS) end
  redis.call(ROOM_PUBLISH, channel,
    '{"offset":' .. offset .. ',"epoch":"' .. epoch .. '",' .. string.sub(env, 2))
  if hook then message_published(hook, head, tail, offset) end
  return epoch, offset, false
end

local function split_rooms(value)
  local rooms = {}
  if value then
    for room in string.gmatch(value, '[^,]+') do rooms[#rooms + 1] = room end
  end
  return rooms
end

local function without(rooms, room)
  local out = {}
  for _, r in ipairs(rooms) do if r ~= room then out[#out + 1] = r end end
  return out
end

-- A step's webhook events (webhook_steps.py, StepEvents.fired): change when the
-- step changed something, edge too when its count crossed (1 after an add, 0 after
-- a removal); each one entry with the one field e. No stream (webhooks off): none.
local function webhook_append(stream, change, edge, changed, crossed)
  if not stream or not changed then return end
  if change and change ~= '' then redis.call('XADD', stream, '*', 'e', change) end
  if crossed and edge and edge ~= '' then redis.call('XADD', stream, '*', 'e', edge) end
end

local function set_current(key, rooms)
  if #rooms > 0 then redis.call('SET', key, rooms[#rooms]) else redis.call('DEL', key) end
end
"""

# -- one relay's slot ----------------------------------------------------------

# KEYS: info, heartbeat, sessions   ARGV: incarnation, host, port, version,
# started_at, ttl_ms, sessions (comma list)
# Returns the sessions listed before.
SERVER_PUT = r"""
local before = redis.call('SMEMBERS', KEYS[3])
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'host', ARGV[2], 'port', ARGV[3], 'version', ARGV[4],
  'started-at', ARGV[5], 'incarnation', ARGV[1])
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[6])
for _, sid in ipairs(split_rooms(ARGV[7])) do redis.call('SADD', KEYS[3], sid) end
return before
"""

# KEYS: info, heartbeat, reaped   ARGV: incarnation, ttl_ms
# Refused (0) for an incarnation a sweeper has begun to reap (its tombstone), even
# while its info is still there: the relay re-registers everything instead.
HEARTBEAT = r"""
if redis.call('HGET', KEYS[1], 'incarnation') ~= ARGV[1] then return 0 end
if redis.call('GET', KEYS[3]) == ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return 1
"""

# KEYS: info, sessions, reaped   ARGV: incarnation, session id
# Refused (0) when the relay is not registered under that incarnation, or is being
# reaped: the relay re-registers everything instead.
SERVER_ADD_SESSION = r"""
if redis.call('HGET', KEYS[1], 'incarnation') ~= ARGV[1] then return 0 end
if redis.call('GET', KEYS[3]) == ARGV[1] then return 0 end
redis.call('SADD', KEYS[2], ARGV[2])
return 1
"""

# KEYS: lock   ARGV: token, ttl_ms
# Take the lock, or keep it when this token already holds it (a retried restore).
LOCK_TAKE = r"""
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""

# KEYS: lock   ARGV: token, ttl_ms ('' or 0: delete)
# The lock holder extends its lock (or lets it go); 0 when the token no longer holds it.
LOCK_KEEP = r"""
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(ARGV[2]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
else
  redis.call('DEL', KEYS[1])
end
return 1
"""

# KEYS: lock, heartbeat, info, reaped, sessions   ARGV: token, incarnation
# Fenced: only the lock holder, only while the heartbeat is still missing and
# the relay has not re-registered under another incarnation. The tombstone tells
# the relay, should it come back, that it was reaped (everyone saw its people
# leave), as opposed to Redis having lost its data; it lives REAP_TOMBSTONE_MS
# (base.py, which the memory backend uses too). Returns {code, sessions...}: 1 go
# on, -1 lock lost, -2 alive again, -3 another incarnation, -4 nothing left (an
# earlier reap finished all but the index entry).
REAP_BEGIN = r"""
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {-1} end
if redis.call('EXISTS', KEYS[2]) == 1 then return {-2} end
local inc = redis.call('HGET', KEYS[3], 'incarnation')
if inc and inc ~= ARGV[2] then return {-3} end
if not inc and redis.call('SCARD', KEYS[5]) == 0 then return {-4} end
redis.call('SET', KEYS[4], inc or ARGV[2], 'PX', REAP_TOMBSTONE_MS)
local out = {1}
for _, sid in ipairs(redis.call('SMEMBERS', KEYS[5])) do out[#out + 1] = sid end
return out
"""

# KEYS: info, heartbeat, sessions, lock   ARGV: incarnation ('' any), token ('' none)
# The last step of a reap or a graceful stop; not when the relay came back meanwhile.
SERVER_DROP = r"""
local inc = redis.call('HGET', KEYS[1], 'incarnation')
if ARGV[1] ~= '' and inc and inc ~= ARGV[1] then return 0 end
if ARGV[2] ~= '' and redis.call('GET', KEYS[4]) ~= ARGV[2] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
return 1
"""

# -- the liveness hash (its own slot) ----------------------------------------------

# KEYS: liveness   ARGV: ttl_ms, stall_ms
# Every refresh is also a pulse: when no relay at all refreshed for stall_ms,
# Redis itself was unreachable to everyone (a stall, a restart), so heartbeats
# that expired meanwhile say nothing about their relays: nobody may reap until
# one full TTL after the first refresh since (the "fence").
PULSE = r"""
local now = script_now()
local pulse = tonumber(redis.call('HGET', KEYS[1], 'pulse') or '0')
if pulse > 0 and now - pulse > tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'fence-until', now + tonumber(ARGV[1]))
end
redis.call('HSET', KEYS[1], 'pulse', now)
return 1
"""

# KEYS: liveness   ARGV: stall_ms, fence_ms
# 1 when reaping is allowed; a reap that runs first after a stall fences now.
MAY_REAP = r"""
local now = script_now()
if now < tonumber(redis.call('HGET', KEYS[1], 'fence-until') or '0') then return 0 end
local pulse = tonumber(redis.call('HGET', KEYS[1], 'pulse') or '0')
if pulse > 0 and now - pulse > tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'fence-until', now + tonumber(ARGV[2]))
  return 0
end
return 1
"""

# -- one session's slot ------------------------------------------------------------

# KEYS: session, current[, webhook stream]   ARGV: fields (JSON), connect envelope
# ('' none), connect channel, merge (1: keep rooms listed before, so the list stays a
# superset of the session's memberships until the leaves that follow ran)[, the
# session.connected event]
# The CONNECT (and its webhook event) goes out only when the session was not there
# before (a retry does not repeat it). Returns {existed, rooms listed before}.
SESSION_PUT = r"""
local s = cjson.decode(ARGV[1])
local existed = redis.call('EXISTS', KEYS[1])
local before = redis.call('HGET', KEYS[1], 'rooms') or ''
local rooms = split_rooms(s['rooms'])
if ARGV[4] == '1' then
  local listed = {}
  for _, r in ipairs(rooms) do listed[r] = true end
  local merged = {}
  for _, r in ipairs(split_rooms(before)) do
    if not listed[r] then merged[#merged + 1] = r end
  end
  for _, r in ipairs(rooms) do merged[#merged + 1] = r end
  rooms = merged
end
redis.call('HSET', KEYS[1], 'server-id', s['server-id'], 'user', s['user'] or '',
  'username', s['username'],
  'remote-address', s['remote-address'], 'version', s['version'],
  'connected-at', s['connected-at'], 'last-seen', s['last-seen'],
  'rooms', table.concat(rooms, ','))
set_current(KEYS[2], rooms)
if existed == 0 and ARGV[2] ~= '' then redis.call('PUBLISH', ARGV[3], ARGV[2]) end
if KEYS[3] then webhook_append(KEYS[3], ARGV[5], nil, existed == 0, false) end
return {existed, before}
"""

# KEYS: session, current   ARGV: room, username, now
# Before the room's step: the session lists every room it may be in.
SESSION_JOIN = r"""
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local rooms = without(split_rooms(redis.call('HGET', KEYS[1], 'rooms')), ARGV[1])
rooms[#rooms + 1] = ARGV[1]
redis.call('HSET', KEYS[1], 'username', ARGV[2], 'last-seen', ARGV[3],
  'rooms', table.concat(rooms, ','))
set_current(KEYS[2], rooms)
return 1
"""

# KEYS: session, current   ARGV: rooms to drop (comma list), now
# After the rooms' steps.
SESSION_LEAVE = r"""
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local rooms = split_rooms(redis.call('HGET', KEYS[1], 'rooms'))
for _, room in ipairs(split_rooms(ARGV[1])) do rooms = without(rooms, room) end
redis.call('HSET', KEYS[1], 'last-seen', ARGV[2], 'rooms', table.concat(rooms, ','))
set_current(KEYS[2], rooms)
return 1
"""

# KEYS: session, current[, webhook stream]   ARGV: disconnect envelope, channel, force
# (1: it left a room)[, the session.disconnected event]
# The DISCONNECT (and its webhook event) goes out when the session existed or left a
# room in this removal.
SESSION_DROP = r"""
local existed = redis.call('DEL', KEYS[1])
redis.call('DEL', KEYS[2])
local gone = existed == 1 or ARGV[3] == '1'
if gone then redis.call('PUBLISH', ARGV[2], ARGV[1]) end
if KEYS[3] then webhook_append(KEYS[3], ARGV[4], nil, gone, false) end
return existed
"""

# -- one user's index (its slot) ------------------------------------------------------

# KEYS: the user's sessions[, webhook stream]   ARGV: session id, present (1/0)[,
# '' (no event per change), user.online (present) or user.offline event]
# The user's first session listed makes it online, its last one unlisted offline.
# Returns {changed, sessions listed}.
USER_INDEX = r"""
local changed
if ARGV[2] == '1' then
  changed = redis.call('SADD', KEYS[1], ARGV[1])
else
  changed = redis.call('SREM', KEYS[1], ARGV[1])
end
local count = redis.call('SCARD', KEYS[1])
webhook_append(KEYS[2], ARGV[3], ARGV[4], changed == 1, count == (ARGV[2] == '1' and 1 or 0))
return {changed, count}
"""

# KEYS: session   ARGV: now
SESSION_TOUCH = r"""
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'last-seen', ARGV[1]) end
return 1
"""

# -- one room's slot (its set, info and log) -----------------------------------------

# KEYS: participants, info, stream, meta, ids[, webhook stream]
# ARGV: join (1) or leave (0), session id, now, envelope head, tail, event id,
#       channel, announce (1/0)[, room.joined/left event, room.occupied/vacated event]
# The event only when SADD/SREM changed something: a retried or repeated step
# says nothing twice (nor do its webhook events). Returns {changed, participants}.
ROOM_CHANGE = r"""
local changed
if ARGV[1] == '1' then
  changed = redis.call('SADD', KEYS[1], ARGV[2])
else
  changed = redis.call('SREM', KEYS[1], ARGV[2])
end
local ts = tonumber(ARGV[3])
local count = redis.call('SCARD', KEYS[1])
if count == 0 then
  redis.call('DEL', KEYS[2])
else
  redis.call('HSETNX', KEYS[2], 'created-at', ts)
  redis.call('HSET', KEYS[2], 'last-activity', ts, 'participants', count)
end
if changed == 1 and ARGV[8] == '1' then
  log_append(KEYS[3], KEYS[4], KEYS[5], ARGV[7], ARGV[4] .. count .. ARGV[5], ARGV[6], ts, true)
end
if KEYS[6] then
  webhook_append(KEYS[6], ARGV[9], ARGV[10], changed == 1, count == (ARGV[1] == '1' and 1 or 0))
end
return {changed, count}
"""

# KEYS: participants, info, stream, meta, ids[, webhook stream]   ARGV: channel,
# envelope, now, message id[, message.published head, tail]
# Returns {epoch, offset, duplicate}.
CHAT = r"""
local ts = tonumber(ARGV[3])
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('HSET', KEYS[2], 'last-activity', ts) end
local epoch, offset, dup = log_append(KEYS[3], KEYS[4], KEYS[5], ARGV[1], ARGV[2], ARGV[4], ts,
  true, KEYS[6], ARGV[5], ARGV[6])
return {epoch, offset, dup and 1 or 0}
"""

# -- one destination's log ----------------------------------------------------------

# KEYS: stream, meta, ids[, webhook stream]   ARGV: channel, envelope, message id, now,
# logged (1/0)[, message.published head, tail]
APPEND = r"""
local epoch, offset, dup = log_append(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3],
  tonumber(ARGV[4]), ARGV[5] == '1', KEYS[4], ARGV[6], ARGV[7])
return {epoch, offset, dup and 1 or 0}
"""

# Several appends in one script run (one node holds every key: not on a cluster).
# KEYS: stream, meta, ids of each append   ARGV: now, then channel, envelope,
# message id, logged (1/0) of each. Returns one {epoch, offset, duplicate} per
# append, or its error: an append that fails fails alone, as its own EVALSHA would.
APPEND_MANY = r"""
local now = tonumber(ARGV[1])
local out = {}
for i = 0, #KEYS / 3 - 1 do
  local k, a = i * 3, 2 + i * 4
  local ok, epoch, offset, dup = pcall(log_append, KEYS[k + 1], KEYS[k + 2], KEYS[k + 3],
    ARGV[a], ARGV[a + 1], ARGV[a + 2], now, ARGV[a + 3] == '1')
  if ok then
    out[i + 1] = {epoch, offset, dup and 1 or 0}
  else
    out[i + 1] = {err = type(epoch) == 'table' and epoch.err or tostring(epoch)}
  end
end
return out
"""

# KEYS: stream, meta   ARGV: after, limit, tail
# Returns {epoch, first, last, parent, since, id1, envelope1, id2, envelope2, ...};
# epoch '' when the log does not exist.
READ = r"""
local epoch = current_epoch(KEYS[2])
if epoch == '' then return {'', 1, 0, '', 0} end
local last = tonumber(redis.call('HGET', KEYS[2], 'seq'))
local head = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
local first = last + 1
if #head > 0 then first = tonumber(string.match(head[1][1], '^(%d+)')) end
local after = tonumber(ARGV[1])
if tonumber(ARGV[3]) > 0 then after = math.max(0, last - tonumber(ARGV[3])) end
local lineage = redis.call('HMGET', KEYS[2], 'parent', 'since')
local out = {epoch, first, last, lineage[1] or '', tonumber(lineage[2] or '0')}
if tonumber(ARGV[2]) > 0 then
  local entries = redis.call('XRANGE', KEYS[1], (after + 1) .. '-0', '+', 'COUNT', ARGV[2])
  for _, entry in ipairs(entries) do
    out[#out + 1] = string.match(entry[1], '^(%d+)')
    out[#out + 1] = entry[2][4]
  end
end
return out
"""

# KEYS: the topic index   ARGV: log id, now
# Is this topic's log kept? Up to HISTORY_MAX_TOPICS live topic logs: the rule of
# history.admit_topic, which the memory log runs on its own index.
TOPIC_ADMIT = r"""
local ts = tonumber(ARGV[2])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  redis.call('ZADD', KEYS[1], ts, ARGV[1])
  return 1
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ts - HISTORY_TTL_MS)
if redis.call('ZCARD', KEYS[1]) >= HISTORY_MAX_TOPICS then return 0 end
redis.call('ZADD', KEYS[1], ts, ARGV[1])
redis.call('PEXPIRE', KEYS[1], HISTORY_TTL_MS)
return 1
"""

SCRIPTS = {
    "server_put": SERVER_PUT,
    "heartbeat": HEARTBEAT,
    "server_add_session": SERVER_ADD_SESSION,
    "reap_begin": REAP_BEGIN,
    "lock_keep": LOCK_KEEP,
    "lock_take": LOCK_TAKE,
    "server_drop": SERVER_DROP,
    "pulse": PULSE,
    "may_reap": MAY_REAP,
    "session_put": SESSION_PUT,
    "session_join": SESSION_JOIN,
    "session_leave": SESSION_LEAVE,
    "session_drop": SESSION_DROP,
    "session_touch": SESSION_TOUCH,
    "user_index": USER_INDEX,
    "room_change": ROOM_CHANGE,
    "chat": CHAT,
    "append": APPEND,
    "append_many": APPEND_MANY,
    "read": READ,
    "topic_admit": TOPIC_ADMIT,
}
