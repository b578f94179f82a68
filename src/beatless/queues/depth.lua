-- Queue depth of Celery (kombu) queues on Redis, in one round trip.
--
-- KEYS[1 .. #KEYS-2]  the queues' priority lists: ARGV[1] consecutive keys per queue
-- KEYS[#KEYS-1]       the unacked hash (delivered, not yet acknowledged):
--                     delivery tag -> JSON [message, exchange, routing_key]
-- KEYS[#KEYS]         the route cache this script keeps: delivery tag -> routing key
-- ARGV[1]             the number of priority lists per queue
-- ARGV[2]             '1': use and keep the route cache; '0': leave it alone
-- ARGV[3 .. q+2]      the queue names, in the order of their lists in KEYS
--
-- Returns { pending per queue..., reserved per queue..., other, unparsed,
--           cached, parsed, cache_error }:
-- `other` counts unacked entries of queues not in ARGV, `unparsed` entries
-- whose routing key could not be read at all, `cached` the entries whose
-- routing key came from the cache, `parsed` those read from their value, and
-- `cache_error` is '' or why the cache could not be read or written.
--
-- Why a cache: the unacked values are ~1 KB each and copying them into Lua is
-- nearly all the cost of a reading. kombu gives every published message a
-- fresh uuid4 delivery tag and fixes its routing key in the same step
-- (Channel._inplace_augment_message); both travel inside the message, and a
-- restored message is re-pushed unchanged, so a redelivery has the same tag
-- AND the same routing key. A tag's routing key, once read, never changes:
-- only tags not yet in the cache are read from their value. (Not seen: a
-- writer other than kombu overwriting a live entry with another routing key
-- under the same tag between two readings. Comparing HSTRLEN per tag would
-- double a reading's cost and still miss an equal length.)
--
-- The cache is exact by construction (it holds what was parsed), and never
-- needed for exactness: when it cannot be read or written (read-only
-- replica, OOM, an ACL user without write access to it) every entry is read
-- from its value, as without a cache, and `cache_error` says why. Errors on
-- the lists or the unacked hash still fail the whole reading.
local TAIL = 128
local TAGS_PER_CALL = 1000 -- HMGET arguments per call: unpack() has a C-stack limit
local PAIRS_PER_CALL = 500
local CACHE_TTL_SECONDS = 86400 -- the cache disappears a day after the last reading

-- kombu stores each unacked entry as the JSON array [message, exchange,
-- routing_key] (json.dumps, so ", " separators). The routing key is cut from
-- the tail of the value with plain searches: decoding ~1 KB of JSON per entry
-- would cost more than everything else together. cjson decodes only the
-- entries whose tail is not a plain string (escapes, null, other separators,
-- keys longer than the window).
local function routing_key(value)
  local n = #value
  -- ends with '"]': the last element is a string
  if string.byte(value, n) == 93 and string.byte(value, n - 1) == 34 then
    local from = n - TAIL
    if from < 1 then from = 1 end
    -- the last '", "' is where the last string starts: a JSON string
    -- cannot contain an unescaped quote
    local last
    local at = string.find(value, '", "', from, true)
    while at do
      last = at
      at = string.find(value, '", "', at + 1, true)
    end
    if last then
      local key = string.sub(value, last + 4, n - 2)
      if not string.find(key, '["\\]') then
        return key
      end
    end
  end
  local ok, decoded = pcall(cjson.decode, value)
  if ok and type(decoded) == 'table' and type(decoded[3]) == 'string' then
    return decoded[3]
  end
  return nil
end

local nkeys = #KEYS
local steps = tonumber(ARGV[1])
local use_cache = ARGV[2] == '1'
local nqueues = #ARGV - 2
if nqueues * steps ~= nkeys - 2 then
  return redis.error_reply('depth script: ' .. (nkeys - 2) .. ' list keys for ' .. nqueues .. ' queues')
end
local unacked, routes = KEYS[nkeys - 1], KEYS[nkeys]

local out = {}
local slot = {}
local counts = {}
for q = 1, nqueues do
  local pending = 0
  for k = (q - 1) * steps + 1, q * steps do
    pending = pending + redis.call('LLEN', KEYS[k])
  end
  out[q] = pending
  slot[ARGV[q + 2]] = q
  counts[q] = 0
end

local cache_error = ''
-- redis.pcall hands errors back as { err = message }: the cache is optional,
-- so its errors end its use for this reading instead of the reading.
local function failed(reply)
  if type(reply) == 'table' and reply.err then
    cache_error = reply.err
    return true
  end
  return false
end

-- HKEYS: each tag once (HSCAN may repeat one), ~36 bytes each.
local tags = redis.call('HKEYS', unacked)
local ntags = #tags
local route = {} -- index in tags -> routing key
local cached = 0
local size = 0 -- entries in the cache before this reading wrote any

-- Looking up and writing a tag costs about a third of what reading its value
-- costs, so the cache loses when most tags are new at every reading (tasks
-- much shorter than the reading interval). The first TAGS_PER_CALL tags are
-- a sample (HKEYS follows the tags' hash order: a stable part of the tag
-- space); the other tags take part only when the cache knew at least a third
-- of the sample. Otherwise only the sample is looked up and written, which
-- is enough to notice when tags start to live longer.
local sample = math.min(ntags, TAGS_PER_CALL)
local covered = sample -- tags 1..covered take part in the cache

local function lookup(first, last)
  local reply = redis.pcall('HMGET', routes, unpack(tags, first, last))
  if failed(reply) then
    route, cached = {}, 0
    return false
  end
  for k = 1, #reply do
    if reply[k] then -- false: not cached
      route[first + k - 1] = reply[k]
      cached = cached + 1
    end
  end
  return true
end

if use_cache then
  local reply = redis.pcall('HLEN', routes)
  if not failed(reply) then
    size = reply
  end
  if size > 0 and sample > 0 and lookup(1, sample) and cached * 3 >= sample then
    covered = ntags
    for i = sample + 1, ntags, TAGS_PER_CALL do
      if not lookup(i, math.min(i + TAGS_PER_CALL - 1, ntags)) then
        break
      end
    end
  end
end

local parsed = {} -- indexes of the tags read from their value
local unparsed = 0
for i = 1, ntags do
  if not route[i] then
    -- the hash cannot change while the script runs: the value is there
    local rk = routing_key(redis.call('HGET', unacked, tags[i]))
    if rk then
      route[i] = rk
      parsed[#parsed + 1] = i
    else
      unparsed = unparsed + 1 -- not cached: read again next time
    end
  end
end

local other = 0
for i = 1, ntags do
  local rk = route[i]
  if rk then
    local s = slot[rk]
    if s then
      counts[s] = counts[s] + 1
    else
      other = other + 1
    end
  end
end

-- Keep the cache: add what was parsed. Entries of tags no longer unacked
-- (acknowledged, restored) are dropped by rewriting the cache once they are
-- more than half as many as the unacked entries, so it never holds more than
-- 1.5 entries per unacked entry; they are harmless meanwhile (only live tags
-- are looked up). When only the sample took part, entries of the other tags
-- count as stale here: at worst the cache is rewritten with the sample alone.
if use_cache and cache_error == '' then
  local write = {}
  for _, i in ipairs(parsed) do
    if i <= covered then
      write[#write + 1] = i
    end
  end
  local stale = size - cached
  if stale > 0 and stale * 2 > ntags then
    if not failed(redis.pcall('UNLINK', routes)) then
      write = {}
      for i = 1, covered do
        if route[i] then
          write[#write + 1] = i
        end
      end
    end
  end
  if cache_error == '' then
    for b = 1, #write, PAIRS_PER_CALL do
      local args = {}
      for k = b, math.min(b + PAIRS_PER_CALL - 1, #write) do
        args[#args + 1] = tags[write[k]]
        args[#args + 1] = route[write[k]]
      end
      if failed(redis.pcall('HSET', routes, unpack(args))) then
        break
      end
    end
  end
  -- A reading that learnt nothing writes nothing (a replica can serve it);
  -- the time to live is renewed when written or when half of it is gone.
  local renew = #write > 0
  if cache_error == '' and not renew and size > 0 then
    local ttl = redis.pcall('TTL', routes)
    renew = not failed(ttl) and ttl < CACHE_TTL_SECONDS / 2
  end
  if cache_error == '' and renew then
    failed(redis.pcall('EXPIRE', routes, CACHE_TTL_SECONDS))
  end
end

for q = 1, nqueues do
  out[nqueues + q] = counts[q]
end
out[2 * nqueues + 1] = other
out[2 * nqueues + 2] = unparsed
out[2 * nqueues + 3] = cached
out[2 * nqueues + 4] = #parsed
out[2 * nqueues + 5] = cache_error
return out
