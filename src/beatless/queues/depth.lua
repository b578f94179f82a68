-- Queue depth of Celery (kombu) queues on Redis, in one round trip.
--
-- KEYS[1 .. #KEYS-1]  the queues' priority lists, in the caller's order
-- KEYS[#KEYS]         the unacked hash (delivered, not yet acknowledged)
-- ARGV[1 .. q]        the queue names whose reserved messages are counted
--
-- Returns { LLEN of each list..., reserved per queue..., other, unparsed }:
-- `other` counts unacked entries of queues not in ARGV, `unparsed` entries
-- whose routing key could not be read at all.
--
-- kombu stores each unacked entry as the JSON array
-- [message, exchange, routing_key]; the routing key is read from the tail of
-- the value with a pattern (a message is ~1 KB, decoding all of it per
-- entry would dominate), and with cjson only when the tail is not a plain
-- string (escapes, null, or longer than the window).
local TAIL = 256
local nkeys = #KEYS
local out = {}
for i = 1, nkeys - 1 do
  out[i] = redis.call('LLEN', KEYS[i])
end

local nqueues = #ARGV
local slot = {}
local counts = {}
for i = 1, nqueues do
  slot[ARGV[i]] = i
  counts[i] = 0
end

local other, unparsed = 0, 0
local values = redis.call('HVALS', KEYS[nkeys])
for _, value in ipairs(values) do
  local rk = string.match(string.sub(value, -TAIL), ',%s*"([^"\\]*)"%]$')
  if rk == nil then
    local ok, decoded = pcall(cjson.decode, value)
    if ok and type(decoded) == 'table' and type(decoded[3]) == 'string' then
      rk = decoded[3]
    end
  end
  if rk == nil then
    unparsed = unparsed + 1
  else
    local i = slot[rk]
    if i then
      counts[i] = counts[i] + 1
    else
      other = other + 1
    end
  end
end

for i = 1, nqueues do
  out[nkeys - 1 + i] = counts[i]
end
out[nkeys + nqueues] = other
out[nkeys + nqueues + 1] = unparsed
return out
