-- reserve: take credits now for work whose cost is known only at the end; the hold's id
-- is its reserve entry's id. ARGV[7] amount, ARGV[8] action, ARGV[9] ttl (ms),
-- ARGV[10] reason, ARGV[11] metadata JSON.
-- Reply: the reserve entry, then the hold record (so a replay reports the hold's state).
local replay = idem_lookup()
if replay then
  if replay[1] == 'ok' then replay[#replay + 1] = redis.call('HGET', K_HOLDS, replay[3]) or '' end
  return replay
end
if is_closed() then return {'closed'} end
local amount = tonumber(ARGV[7])
local bal, needs_init, raw = load_balance()
if bal < amount then return {'insufficient', fmt(bal), fmt(amount)} end
apply_init_if_needed(needs_init, raw)
local expires = NOW + tonumber(ARGV[9])
local reply = commit('reserve', -amount, bal - amount, ARGV[8], APP, ARGV[10], '', ARGV[11])
local record = 'O|' .. fmt(amount) .. '|' .. fmt(expires) .. '|' .. ARGV[8] .. '|' .. APP
redis.call('HSET', K_HOLDS, reply[3], record)
redis.call('ZADD', K_HOLD_EXP, expires, reply[3])
reply[#reply + 1] = record
return reply
