"""Lua scripts of the Redis registry (run with EVALSHA: each one is atomic).

Each script is the key-name prelude from :mod:`keys` plus the shared library
below plus its own body. Room events are encoded here with ``cjson`` in the
same shape as :func:`stomprelay.cluster.registry.room_event` and wrapped in the
bus envelope of :mod:`stomprelay.cluster.envelope`, then PUBLISHed from inside
the script, so the change and its announcement are one atomic step.
"""

from __future__ import annotations

LIBRARY = r"""
local EVENT_TYPE = 'application/json;charset=utf-8'
local seq = 0
-- Ids given by the relay (fixed_id) that this script published.
local published = {}

-- fixed_id: the id the relay already gave this event when it delivered it
-- locally during an outage (so the relay can recognise it and not deliver twice).
-- Returns the envelope JSON and its id.
-- kind: the room event's type, sent as the reserved x-event-type header
-- (registry.event_headers); nil for session events.
local function envelope(eid, origin, destination, body, ts, fixed_id, kind)
  seq = seq + 1
  if fixed_id then published[#published + 1] = fixed_id end
  local id = fixed_id or eid
  if not fixed_id and destination == '' then id = eid .. '-' .. seq end
  local headers = {{'content-type', EVENT_TYPE}}
  if kind then headers[2] = {'x-event-type', kind} end
  return cjson.encode({v = 1, id = id, origin = origin,
    destination = destination, headers = headers,
    body = body, encoding = 'utf-8', ts = ts}), id
end

local function room_event(kind, room, sid, username, server, ts, count, reason, message)
  return cjson.encode({type = kind, roomId = room, sessionId = sid, username = username,
    serverId = server, timestamp = ts, participants = count, reason = reason,
    message = message})
end

local function script_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), t
end

-- Is this log kept? Rooms and the global broadcast always (history on);
-- client-invented topics up to HISTORY_MAX_TOPICS live logs.
local function logged(lid, ts)
  if HISTORY_SIZE <= 0 then return false end
  if string.sub(lid, 1, 6) ~= 'topic:' then return true end
  if HISTORY_ROOMS_ONLY then return false end
  local index = k_history_topics()
  if redis.call('ZSCORE', index, lid) then return true end
  redis.call('ZREMRANGEBYSCORE', index, '-inf', ts - HISTORY_TTL_MS)
  return redis.call('ZCARD', index) < HISTORY_MAX_TOPICS
end

-- Append env (an envelope JSON object without offset) to the log lid and
-- PUBLISH it on channel with "offset" and "epoch" in front, in this one step.
-- Idempotent by message id mid: a known id returns its offset, publishes nothing.
-- Returns epoch, offset (0 when the destination is not logged), duplicate.
local function log_append(lid, channel, env, mid, ts)
  if not logged(lid, ts) then
    redis.call('PUBLISH', channel, env)
    return '', 0, false
  end
  local stream, meta, ids = k_history(lid), k_history_meta(lid), k_history_ids(lid)
  local epoch = redis.call('HGET', meta, 'epoch')
  if epoch then
    local known = redis.call('ZSCORE', ids, mid)
    if known then return epoch, tonumber(known), true end
  else
    local _, t = script_now()
    epoch = string.format('%x%06d', tonumber(t[1]), tonumber(t[2]))
    redis.call('DEL', stream, ids)
    redis.call('HSET', meta, 'epoch', epoch, 'seq', 0, 'created-at', ts)
  end
  local offset = redis.call('HINCRBY', meta, 'seq', 1)
  redis.call('XADD', stream, 'MAXLEN', HISTORY_SIZE, offset .. '-0', 'i', mid, 'e', env)
  -- ids outlive their entries (HISTORY_ID_WINDOW appends), so a journal replayed
  -- after a long outage still finds an append that did run
  redis.call('ZADD', ids, offset, mid)
  redis.call('ZREMRANGEBYSCORE', ids, '-inf', offset - HISTORY_ID_WINDOW)
  redis.call('HSET', meta, 'last-at', ts)
  for _, key in ipairs({stream, meta, ids}) do redis.call('PEXPIRE', key, HISTORY_TTL_MS) end
  if string.sub(lid, 1, 6) == 'topic:' then
    redis.call('ZADD', k_history_topics(), ts, lid)
    redis.call('PEXPIRE', k_history_topics(), HISTORY_TTL_MS)
  end
  redis.call('PUBLISH', channel,
    '{"offset":' .. offset .. ',"epoch":"' .. epoch .. '",' .. string.sub(env, 2))
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

local function set_current(sid, rooms)
  if #rooms > 0 then
    redis.call('SET', k_current_room(sid), rooms[#rooms])
  else
    redis.call('DEL', k_current_room(sid))
  end
end

local function room_count(room, ts)
  local count = redis.call('SCARD', k_room_participants(room))
  if count == 0 then
    redis.call('DEL', k_room_info(room))
  else
    redis.call('HSETNX', k_room_info(room), 'created-at', ts)
    redis.call('HSET', k_room_info(room), 'last-activity', ts, 'participants', count)
  end
  return count
end

-- Add sid to room; JOIN event (id eid) when newly added and announce is set.
local function join_room(sid, room, username, server, ts, eid, announce, fixed_id)
  local added = redis.call('SADD', k_room_participants(room), sid)
  local count = room_count(room, ts)
  if added == 1 and announce then
    local body = room_event('JOIN', room, sid, username, server, ts, count, nil,
      username .. ' joined')
    local env, id = envelope(eid, server, '/topic/room/' .. room, body, ts, fixed_id, 'JOIN')
    log_append('room:' .. room, k_join_channel(room), env, id, ts)
  end
  return added, count
end

-- Remove sid from room; one LEAVE event (id eid) when it was a participant.
local function leave_room(sid, room, username, server, reason, ts, eid, fixed_id)
  local removed = redis.call('SREM', k_room_participants(room), sid)
  local count = room_count(room, ts)
  if removed == 1 then
    local body = room_event('LEAVE', room, sid, username, server, ts, count, reason,
      username .. ' left')
    local env, id = envelope(eid, server, '/topic/room/' .. room, body, ts, fixed_id, 'LEAVE')
    log_append('room:' .. room, k_leave_channel(room), env, id, ts)
  end
  return removed, count
end

-- Remove a session entirely: LEAVE for each room, keys gone, disconnect event.
-- leave_ids: room -> event id for LEAVEs the relay already delivered locally.
local function remove_session(sid, server, extra_rooms, reason, ts, eid, origin, leave_ids)
  leave_ids = leave_ids or {}
  local skey = k_session(sid)
  local fields = redis.call('HMGET', skey, 'server-id', 'username', 'rooms')
  local owner = fields[1] or server
  local username = fields[2] or ''
  local rooms = split_rooms(fields[3])
  for _, r in ipairs(extra_rooms) do
    local known = false
    for _, x in ipairs(rooms) do if x == r then known = true end end
    if not known then rooms[#rooms + 1] = r end
  end
  local left = 0
  for _, room in ipairs(rooms) do
    left = left + leave_room(sid, room, username, owner, reason, ts, eid .. '/' .. room,
      leave_ids[room])
  end
  local existed = redis.call('DEL', skey)
  redis.call('DEL', k_current_room(sid))
  redis.call('SREM', k_sessions_active(), sid)
  redis.call('SREM', k_server_sessions(owner), sid)
  if existed == 1 or left > 0 then
    local body = cjson.encode({type = 'DISCONNECT', sessionId = sid, serverId = owner,
      username = username, reason = reason, timestamp = ts})
    local env = envelope(eid, origin, '', body, ts)
    redis.call('PUBLISH', k_session_disconnect_channel(), env)
  end
  return existed
end

local function remove_server(server, reason, ts, eid, origin)
  local sids = redis.call('SMEMBERS', k_server_sessions(server))
  for _, sid in ipairs(sids) do
    remove_session(sid, server, {}, reason, ts, eid .. '/' .. sid, origin)
  end
  redis.call('DEL', k_server_sessions(server), k_server_info(server),
    k_server_heartbeat(server))
  redis.call('SREM', k_servers_active(), server)
  return #sids
end
"""

# ARGV: server, incarnation, host, port, version, started_at, ttl_ms, now, event id
# A fresh process holds no sessions yet: any listed under its id belong to an
# earlier process with the same id that died, and leave as lost.
REGISTER_SERVER = r"""
local server = ARGV[1]
for _, sid in ipairs(redis.call('SMEMBERS', k_server_sessions(server))) do
  remove_session(sid, server, {}, 'server-lost', tonumber(ARGV[8]), ARGV[9] .. '/' .. sid, server)
end
redis.call('SADD', k_servers_active(), server)
redis.call('DEL', k_server_info(server))
redis.call('HSET', k_server_info(server), 'host', ARGV[3], 'port', ARGV[4],
  'version', ARGV[5], 'started-at', ARGV[6], 'incarnation', ARGV[2])
redis.call('SET', k_server_heartbeat(server), ARGV[2], 'PX', ARGV[7])
return 1
"""

# ARGV: server, incarnation, ttl_ms, stall_ms
# Every refresh is also a pulse: when no relay at all refreshed for stall_ms,
# Redis itself was unreachable to everyone (a stall, a restart), so heartbeats
# that expired meanwhile say nothing about their relays: nobody may reap until
# one full TTL after the first refresh since (the "fence").
REFRESH_SERVER = r"""
local server = ARGV[1]
local now = script_now()
local pulse = tonumber(redis.call('HGET', k_liveness(), 'pulse') or '0')
if pulse > 0 and now - pulse > tonumber(ARGV[4]) then
  redis.call('HSET', k_liveness(), 'fence-until', now + tonumber(ARGV[3]))
end
redis.call('HSET', k_liveness(), 'pulse', now)
if redis.call('SISMEMBER', k_servers_active(), server) == 0 then return 0 end
if redis.call('HGET', k_server_info(server), 'incarnation') ~= ARGV[2] then return 0 end
redis.call('SET', k_server_heartbeat(server), ARGV[2], 'PX', ARGV[3])
return 1
"""

# ARGV: session fields as JSON, event id, incarnation
# Refused (0) when the relay is not registered under that incarnation (it was
# reaped): the relay re-registers everything instead, so no session is ever
# added under a relay the reaper no longer watches.
ADD_SESSION = r"""
local s = cjson.decode(ARGV[1])
local sid = s['session-id']
local ts = tonumber(s['connected-at'])
if redis.call('SISMEMBER', k_servers_active(), s['server-id']) == 0
    or redis.call('HGET', k_server_info(s['server-id']), 'incarnation') ~= ARGV[3] then
  return 0
end
redis.call('HSET', k_session(sid), 'server-id', s['server-id'], 'username', s['username'],
  'remote-address', s['remote-address'], 'version', s['version'],
  'connected-at', s['connected-at'], 'last-seen', s['last-seen'], 'rooms', s['rooms'])
redis.call('SADD', k_sessions_active(), sid)
redis.call('SADD', k_server_sessions(s['server-id']), sid)
local body = cjson.encode({type = 'CONNECT', sessionId = sid, serverId = s['server-id'],
  username = s['username'], timestamp = ts})
local env = envelope(ARGV[2], s['server-id'], '', body, ts)
redis.call('PUBLISH', k_session_connect_channel(), env)
return 1
"""

# ARGV: sid, server, reason, now, event id, rooms (comma list)
REMOVE_SESSION = r"""
return remove_session(ARGV[1], ARGV[2], split_rooms(ARGV[6]), ARGV[3], tonumber(ARGV[4]),
  ARGV[5], ARGV[2])
"""

# ARGV: sid, room, username, server, now, event id
JOIN = r"""
local sid, room = ARGV[1], ARGV[2]
local ts = tonumber(ARGV[5])
local skey = k_session(sid)
if redis.call('EXISTS', skey) == 0 then return {-1, 0} end
local added, count = join_room(sid, room, ARGV[3], ARGV[4], ts, ARGV[6], true)
local rooms = without(split_rooms(redis.call('HGET', skey, 'rooms')), room)
rooms[#rooms + 1] = room
redis.call('HSET', skey, 'username', ARGV[3], 'last-seen', ts, 'rooms', table.concat(rooms, ','))
set_current(sid, rooms)
return {added, count}
"""

# ARGV: sid, room, server, reason, now, event id
LEAVE = r"""
local sid, room = ARGV[1], ARGV[2]
local ts = tonumber(ARGV[5])
local skey = k_session(sid)
local username = redis.call('HGET', skey, 'username') or ''
local removed, count = leave_room(sid, room, username, ARGV[3], ARGV[4], ts, ARGV[6])
if redis.call('EXISTS', skey) == 1 then
  local rooms = without(split_rooms(redis.call('HGET', skey, 'rooms')), room)
  redis.call('HSET', skey, 'last-seen', ts, 'rooms', table.concat(rooms, ','))
  set_current(sid, rooms)
end
return {removed, count}
"""

# ARGV: sid, room, channel, envelope, now, message id
CHAT = r"""
local ts = tonumber(ARGV[5])
if redis.call('EXISTS', k_room_info(ARGV[2])) == 1 then
  redis.call('HSET', k_room_info(ARGV[2]), 'last-activity', ts)
end
if redis.call('EXISTS', k_session(ARGV[1])) == 1 then
  redis.call('HSET', k_session(ARGV[1]), 'last-seen', ts)
end
local epoch, offset = log_append('room:' .. ARGV[2], ARGV[3], ARGV[4], ARGV[6], ts)
return {epoch, offset}
"""

# ARGV: log id, channel, envelope, message id, now
APPEND = r"""
local epoch, offset, dup = log_append(ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]))
return {epoch, offset, dup and 1 or 0}
"""

# ARGV: log id, after, limit, tail
# Returns {epoch, first, last, id1, envelope1, id2, envelope2, ...}; epoch ''
# when the log does not exist.
READ = r"""
local stream, meta = k_history(ARGV[1]), k_history_meta(ARGV[1])
local epoch = redis.call('HGET', meta, 'epoch')
if not epoch then return {'', 1, 0} end
local last = tonumber(redis.call('HGET', meta, 'seq'))
local head = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)
local first = last + 1
if #head > 0 then first = tonumber(string.match(head[1][1], '^(%d+)')) end
local after = tonumber(ARGV[2])
if tonumber(ARGV[4]) > 0 then after = math.max(0, last - tonumber(ARGV[4])) end
local out = {epoch, first, last}
if tonumber(ARGV[3]) > 0 then
  local entries = redis.call('XRANGE', stream, (after + 1) .. '-0', '+', 'COUNT', ARGV[3])
  for _, entry in ipairs(entries) do
    out[#out + 1] = string.match(entry[1], '^(%d+)')
    out[#out + 1] = entry[2][4]
  end
end
return out
"""

# ARGV: server, incarnation, lock token, sweeper id, now, event id, stall_ms, ttl_ms
# Fenced: only the lock holder, only while the heartbeat is still missing and
# the relay has not re-registered under another incarnation.
REAP = r"""
local server = ARGV[1]
if redis.call('GET', k_reaper_lock(server)) ~= ARGV[3] then return -1 end
redis.call('DEL', k_reaper_lock(server))
if redis.call('SISMEMBER', k_servers_active(), server) == 0 then return -4 end
if redis.call('EXISTS', k_server_heartbeat(server)) == 1 then return -2 end
local inc = redis.call('HGET', k_server_info(server), 'incarnation')
if inc and inc ~= ARGV[2] then return -3 end
local now = script_now()
if now < tonumber(redis.call('HGET', k_liveness(), 'fence-until') or '0') then return -5 end
-- No refresh by anyone for stall_ms: Redis itself was unreachable (this reap ran
-- first after a stall): fence now, before judging anyone.
local pulse = tonumber(redis.call('HGET', k_liveness(), 'pulse') or '0')
if pulse > 0 and now - pulse > tonumber(ARGV[7]) then
  redis.call('HSET', k_liveness(), 'fence-until', now + tonumber(ARGV[8]))
  return -5
end
-- The tombstone tells this relay, should it come back, that it was reaped
-- (everyone saw its people leave), as opposed to Redis having lost its data.
redis.call('SET', k_reaped(server), inc or ARGV[2], 'PX', 3600000)
return remove_server(server, 'server-lost', tonumber(ARGV[5]), ARGV[6], ARGV[4])
"""

# ARGV: server, now, event id
UNREGISTER = r"""
return remove_server(ARGV[1], 'disconnected', tonumber(ARGV[2]), ARGV[3], ARGV[1])
"""

# ARGV: server, incarnation, host, port, version, started_at, ttl_ms, announce (0/1),
#       now, event id, sessions JSON, gone JSON
# sessions: [{session fields, 'session-id', 'joins': {room: id}, 'leaves': {room: id},
#             'new': '1' if its CONNECT was never announced}]
# gone: {session id: {room: id}} for sessions that ended while Redis was unreachable.
# JOIN for a membership re-added when announce is set or the relay has an id for it
# (a join Redis never saw); LEAVE for memberships the relay no longer holds.
# Returns the relay-given ids it published.
RESTORE = r"""
local server = ARGV[1]
local ts = tonumber(ARGV[9])
local announce = ARGV[8] == '1'
local gone = cjson.decode(ARGV[12])
redis.call('SADD', k_servers_active(), server)
redis.call('DEL', k_server_info(server))
redis.call('HSET', k_server_info(server), 'host', ARGV[3], 'port', ARGV[4],
  'version', ARGV[5], 'started-at', ARGV[6], 'incarnation', ARGV[2])
redis.call('SET', k_server_heartbeat(server), ARGV[2], 'PX', ARGV[7])
local held = {}
for _, s in ipairs(cjson.decode(ARGV[11])) do
  local sid = s['session-id']
  held[sid] = true
  local rooms = split_rooms(s['rooms'])
  local keep = {}
  for _, room in ipairs(rooms) do keep[room] = true end
  local existed = redis.call('EXISTS', k_session(sid))
  for _, room in ipairs(split_rooms(redis.call('HGET', k_session(sid), 'rooms'))) do
    if not keep[room] then
      local eid = ARGV[10] .. '/' .. sid .. '/' .. room
      leave_room(sid, room, s['username'], server, 'left', ts, eid, s['leaves'][room])
    end
  end
  redis.call('HSET', k_session(sid), 'server-id', server, 'username', s['username'],
    'remote-address', s['remote-address'], 'version', s['version'],
    'connected-at', s['connected-at'], 'last-seen', s['last-seen'], 'rooms', s['rooms'])
  redis.call('SADD', k_sessions_active(), sid)
  redis.call('SADD', k_server_sessions(server), sid)
  if existed == 0 and s['new'] == '1' then
    local body = cjson.encode({type = 'CONNECT', sessionId = sid, serverId = server,
      username = s['username'], timestamp = tonumber(s['connected-at'])})
    local env = envelope(ARGV[10], server, '', body, ts)
    redis.call('PUBLISH', k_session_connect_channel(), env)
  end
  for _, room in ipairs(rooms) do
    local fixed = s['joins'][room]
    join_room(sid, room, s['username'], server, ts, ARGV[10] .. '/' .. sid .. '/' .. room,
      announce or fixed ~= nil, fixed)
  end
  set_current(sid, rooms)
end
for _, sid in ipairs(redis.call('SMEMBERS', k_server_sessions(server))) do
  if not held[sid] then
    remove_session(sid, server, {}, 'disconnected', ts, ARGV[10] .. '/' .. sid, server, gone[sid])
  end
end
return published
"""

# ARGV: room
PARTICIPANTS = r"""
local out = {}
for _, sid in ipairs(redis.call('SMEMBERS', k_room_participants(ARGV[1]))) do
  local f = redis.call('HMGET', k_session(sid), 'username', 'server-id')
  out[#out + 1] = sid
  out[#out + 1] = f[1] or ''
  out[#out + 1] = f[2] or ''
end
return out
"""

SCRIPTS = {
    "register_server": REGISTER_SERVER,
    "refresh_server": REFRESH_SERVER,
    "add_session": ADD_SESSION,
    "remove_session": REMOVE_SESSION,
    "join": JOIN,
    "leave": LEAVE,
    "chat": CHAT,
    "append": APPEND,
    "read": READ,
    "reap": REAP,
    "unregister": UNREGISTER,
    "restore": RESTORE,
    "participants": PARTICIPANTS,
}
