"""The dedup store's Lua scripts: each runs over a whole batch in one Redis call.

Keys and values are described in ``_dedup``; each script's KEYS and ARGV above it.
A batch's ids (or places) travel as one msgpack array in one argument, and the
scripts build their keys from it and the key prefixes: a key per argument
cost the polling thread more than the scripts cost Redis. The keys are then
not declared in KEYS, which only Redis Cluster needs, and which the dedup
store refuses.
"""

# ``value`` is "<token>:<owner>"; tokens are integers, so the first ':' ends the token.
LUA_HELPERS = """
local function owner_of(value)
  return string.sub(value, string.find(value, ':', 1, true) + 1)
end
local function token_of(value)
  return tonumber(string.sub(value, 1, string.find(value, ':', 1, true) - 1))
end
-- The ids of a batch (a msgpack array), and how many.
local function ids_of(packed)
  local ids = cmsgpack.unpack(packed)
  return ids, #ids
end
local function release_if_mine(key, owner)
  local value = redis.call('GET', key)
  if value and owner_of(value) == owner then
    redis.call('DEL', key)
  end
end
"""

# KEYS: the state key. ARGV: done-key prefix, claim-key prefix, the ids, owner, token,
# claim TTL in ms. Returns, for each id, 2 when it is done, 1 when this owner holds it
# afterwards, 0 when another does; -1 (claiming nothing) when the state key is missing.
CLAIM = (
    LUA_HELPERS
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return -1
end
local ids, n = ids_of(ARGV[3])
local owner, token, ttl_ms = ARGV[4], tonumber(ARGV[5]), ARGV[6]
local mine = ARGV[5] .. ':' .. owner
local held = {}
for i = 1, n do
  local claim = ARGV[2] .. ids[i]
  held[i] = 0
  if redis.call('EXISTS', ARGV[1] .. ids[i]) == 1 then
    held[i] = 2
  else
    if redis.call('SET', claim, mine, 'NX', 'PX', ttl_ms) then
      held[i] = 1
    else
      local current = redis.call('GET', claim)
      if owner_of(current) == owner and token_of(current) <= token then
        redis.call('SET', claim, mine, 'PX', ttl_ms)
        held[i] = 1
      end
    end
  end
end
return held
"""
)

# ARGV: done-key prefix, claim-key prefix, the ids, owner, token, claim TTL in ms. Returns
# 1 for each claim renewed, or replaced by this owner's done-mark (done meanwhile), else 0.
RENEW = (
    LUA_HELPERS
    + """
local ids, n = ids_of(ARGV[3])
local owner, token = ARGV[4], tonumber(ARGV[5])
local renewed = {}
for i = 1, n do
  local claim = ARGV[2] .. ids[i]
  local current = redis.call('GET', claim)
  renewed[i] = 0
  if current then
    if owner_of(current) == owner and token_of(current) <= token then
      redis.call('PEXPIRE', claim, ARGV[6])
      renewed[i] = 1
    end
  else
    local done = redis.call('GET', ARGV[1] .. ids[i])
    if done and string.find(done, ':', 1, true) and owner_of(done) == owner then
      renewed[i] = 1
    end
  end
end
return renewed
"""
)

# ARGV: done-key prefix, claim-key prefix, the ids, token, done TTL in s, owner.
MARK_DONE = (
    LUA_HELPERS
    + """
local ids, n = ids_of(ARGV[3])
local mark = ARGV[4] .. ':' .. ARGV[6]
for i = 1, n do
  redis.call('SET', ARGV[1] .. ids[i], mark, 'EX', ARGV[5])
  release_if_mine(ARGV[2] .. ids[i], ARGV[6])
end
"""
)

# ARGV: done-key prefix, claim-key prefix, the ids, owner.
RELEASE = (
    LUA_HELPERS
    + """
local ids, n = ids_of(ARGV[3])
for i = 1, n do
  release_if_mine(ARGV[2] .. ids[i], ARGV[4])
end
"""
)

# The run-log scripts' ARGV start with the running-key prefix, then the finished places,
# whose marks are deleted (those records ran to their outcome). Places are msgpack
# arrays of [topic, partition, offset]; a place's key is PREFIX .. "topic:partition:offset".
RUN_HELPERS = """
local function place_keys(packed)
  local keys = {}
  for i, place in ipairs(cmsgpack.unpack(packed)) do
    keys[i] = ARGV[1] .. place[1] .. string.format(':%d:%d', place[2], place[3])
  end
  return keys
end
for _, key in ipairs(place_keys(ARGV[2])) do
  redis.call('DEL', key)
end
"""

# ARGV: the prefix, the finished places, the places to start, run id, TTL in s, "1" for a
# suspect. Returns, per place to start, the other runs that marked it; marks them all for
# this run when those are all 0, or for a suspect.
MARK_RUNNING = (
    RUN_HELPERS
    + """
local keys, run = place_keys(ARGV[3]), ARGV[4]
local others, clean = {}, true
for i, key in ipairs(keys) do
  local n = redis.call('HLEN', key) - redis.call('HEXISTS', key, run)
  others[i] = n
  clean = clean and n == 0
end
if clean or ARGV[6] == '1' then
  for _, key in ipairs(keys) do
    redis.call('HSET', key, run, 1)
    redis.call('EXPIRE', key, ARGV[5])
  end
end
return others
"""
)

# ARGV: the prefix, the finished places, the places the run leaves, run id.
FORGET_RUN = (
    RUN_HELPERS
    + """
for _, key in ipairs(place_keys(ARGV[3])) do
  redis.call('HDEL', key, ARGV[4])
end
"""
)
