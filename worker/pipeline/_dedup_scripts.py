"""The dedup store's Lua scripts: each runs over a whole batch in one Redis call.

Keys and values are described in ``_dedup``; each script's KEYS and ARGV above it.
"""

# ``value`` is "<token>:<owner>"; tokens are integers, so the first ':' ends the token.
LUA_HELPERS = """
local function owner_of(value)
  return string.sub(value, string.find(value, ':', 1, true) + 1)
end
local function token_of(value)
  return tonumber(string.sub(value, 1, string.find(value, ':', 1, true) - 1))
end
local function release_if_mine(key, owner)
  local value = redis.call('GET', key)
  if value and owner_of(value) == owner then
    redis.call('DEL', key)
  end
end
"""

# KEYS: the state key, n done keys, then the n claim keys. ARGV: owner, token, claim TTL
# in ms. Returns, for each id, 2 when it is done, 1 when this owner holds it afterwards,
# 0 when another does; -1 (claiming nothing) when the state key is missing.
CLAIM = (
    LUA_HELPERS
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return -1
end
local n = (#KEYS - 1) / 2
local owner, token, ttl_ms = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local mine = ARGV[2] .. ':' .. owner
local held = {}
for i = 1, n do
  held[i] = 0
  if redis.call('EXISTS', KEYS[1 + i]) == 1 then
    held[i] = 2
  else
    if redis.call('SET', KEYS[1 + n + i], mine, 'NX', 'PX', ttl_ms) then
      held[i] = 1
    else
      local current = redis.call('GET', KEYS[1 + n + i])
      if owner_of(current) == owner and token_of(current) <= token then
        redis.call('SET', KEYS[1 + n + i], mine, 'PX', ttl_ms)
        held[i] = 1
      end
    end
  end
end
return held
"""
)

# KEYS: n claim keys, then the n done keys. ARGV: owner, token, claim TTL in ms. Returns 1
# for each claim renewed, or replaced by this owner's done-mark (done meanwhile), else 0.
RENEW = (
    LUA_HELPERS
    + """
local n = #KEYS / 2
local owner, token = ARGV[1], tonumber(ARGV[2])
local renewed = {}
for i = 1, n do
  local current = redis.call('GET', KEYS[i])
  renewed[i] = 0
  if current then
    if owner_of(current) == owner and token_of(current) <= token then
      redis.call('PEXPIRE', KEYS[i], ARGV[3])
      renewed[i] = 1
    end
  else
    local done = redis.call('GET', KEYS[n + i])
    if done and string.find(done, ':', 1, true) and owner_of(done) == owner then
      renewed[i] = 1
    end
  end
end
return renewed
"""
)

# KEYS: n done keys, then the n claim keys. ARGV: token, done TTL in s, owner.
MARK_DONE = (
    LUA_HELPERS
    + """
local n = #KEYS / 2
local mark = ARGV[1] .. ':' .. ARGV[3]
for i = 1, n do
  redis.call('SET', KEYS[i], mark, 'EX', ARGV[2])
  release_if_mine(KEYS[n + i], ARGV[3])
end
"""
)

# KEYS: claim keys. ARGV: owner.
RELEASE = (
    LUA_HELPERS
    + """
for _, key in ipairs(KEYS) do
  release_if_mine(key, ARGV[1])
end
"""
)

# The run-log scripts' KEYS start with the keys of the finished places (ARGV[1] of them),
# whose marks are deleted: those records ran to their outcome.
FORGET_FINISHED = """
local finished = tonumber(ARGV[1])
for i = 1, finished do
  redis.call('DEL', KEYS[i])
end
"""

# KEYS: finished, then the places to start. ARGV: how many are finished, run id, TTL in s,
# "1" for a suspect. Returns, per place to start, the other runs that marked it; marks them
# all for this run when those are all 0, or for a suspect.
MARK_RUNNING = (
    FORGET_FINISHED
    + """
local run = ARGV[2]
local others, clean = {}, true
for i = finished + 1, #KEYS do
  local n = redis.call('HLEN', KEYS[i]) - redis.call('HEXISTS', KEYS[i], run)
  others[i - finished] = n
  clean = clean and n == 0
end
if clean or ARGV[4] == '1' then
  for i = finished + 1, #KEYS do
    redis.call('HSET', KEYS[i], run, 1)
    redis.call('EXPIRE', KEYS[i], ARGV[3])
  end
end
return others
"""
)

# KEYS: finished, then the places the run leaves. ARGV: how many are finished, run id.
FORGET_RUN = (
    FORGET_FINISHED
    + """
for i = finished + 1, #KEYS do
  redis.call('HDEL', KEYS[i], ARGV[2])
end
"""
)
