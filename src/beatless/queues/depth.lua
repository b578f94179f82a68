-- Queue depth of Celery (kombu) queues on Redis, in one round trip.
--
-- KEYS[1 .. #KEYS-1]  the queues' priority lists: ARGV[1] consecutive keys per queue
-- KEYS[#KEYS]         the unacked hash (delivered, not yet acknowledged)
-- ARGV[1]             the number of priority lists per queue
-- ARGV[2 .. q+1]      the queue names, in the order of their lists in KEYS
--
-- Returns { pending per queue..., reserved per queue..., other, unparsed }:
-- `other` counts unacked entries of queues not in ARGV, `unparsed` entries
-- whose routing key could not be read at all.
--
-- kombu stores each unacked entry as the JSON array
-- [message, exchange, routing_key] (json.dumps, so ", " separators). The
-- routing key is cut from the tail of the value with plain searches: decoding
-- ~1 KB of JSON per entry would cost more than everything else together.
-- cjson decodes only the entries whose tail is not a plain string (escapes,
-- null, other separators, keys longer than the window).
local TAIL = 128
local BATCH = '500' -- HSCAN COUNT: large replies cost more per byte to hand to Lua

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
local nqueues = #ARGV - 1
if nqueues * steps ~= nkeys - 1 then
  return redis.error_reply('depth script: ' .. (nkeys - 1) .. ' list keys for ' .. nqueues .. ' queues')
end

local out = {}
local slot = {}
local counts = {}
for q = 1, nqueues do
  local pending = 0
  for k = (q - 1) * steps + 1, q * steps do
    pending = pending + redis.call('LLEN', KEYS[k])
  end
  out[q] = pending
  slot[ARGV[q + 1]] = q
  counts[q] = 0
end

-- HSCAN rather than HVALS: the same data in batches is handed to Lua faster.
-- SCAN may return an entry twice; the hash cannot change while the script
-- runs, so visiting more entries than HLEN is the sign, and only then is the
-- scan repeated counting each delivery tag once.
local function count_unacked(dedupe)
  local seen = {}
  local visited, other, unparsed = 0, 0, 0
  for q = 1, nqueues do
    counts[q] = 0
  end
  local cursor = '0'
  repeat
    local page = redis.call('HSCAN', KEYS[nkeys], cursor, 'COUNT', BATCH)
    cursor = page[1]
    local fields = page[2]
    for i = 1, #fields, 2 do
      local tag = fields[i]
      if not (dedupe and seen[tag]) then
        if dedupe then
          seen[tag] = true
        end
        visited = visited + 1
        local rk = routing_key(fields[i + 1])
        if rk == nil then
          unparsed = unparsed + 1
        else
          local s = slot[rk]
          if s then
            counts[s] = counts[s] + 1
          else
            other = other + 1
          end
        end
      end
    end
  until cursor == '0'
  return visited, other, unparsed
end

local visited, other, unparsed = count_unacked(false)
if visited ~= redis.call('HLEN', KEYS[nkeys]) then
  visited, other, unparsed = count_unacked(true)
end

for q = 1, nqueues do
  out[nqueues + q] = counts[q]
end
out[2 * nqueues + 1] = other
out[2 * nqueues + 2] = unparsed
return out
