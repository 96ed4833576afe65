--: argv amount action ttl_ms reason metadata
--: keys controls alerts
--: reply hold
--: refusals closed insufficient spend_limit conflict replay_gone
-- reserve: take credits now for work whose cost is known only at the end; the hold's id
-- is its reserve entry's id, and the entry's '_sc.x' keeps its expiry (so the full repair
-- can rebuild an open hold from the ledger). ARGV[9] amount, ARGV[10] action, ARGV[11] ttl
-- (ms), ARGV[12] reason, ARGV[13] metadata JSON.
-- Draws from the lots like a debit ('_sc.l'); settle, release and expiry give back to them.
-- Reply: the reserve entry, then the hold record (so a replay reports the hold's state).
K_CTL_EXPIRY = KEYS[11]  -- an expired hold gives its spend window back (prelude.lua)
local replay = idem_lookup()
if replay then
  if replay[1] == 'ok' then replay[#replay + 1] = redis.call('HGET', K_HOLDS, replay[3]) or '' end
  return replay
end
if is_closed() then return {'closed'} end
local amount = tonumber(ARGV[9])
local bal, needs_init, raw = load_balance()
if bal < amount then return {'insufficient', fmt(bal), fmt(amount)} end
-- A reservation counts against the spend windows now (release and settle give back).
local limited, controlled = controls(KEYS[11], KEYS[12], amount, '', bal, bal - amount,
                                       ARGV[13])
if limited then return limited end
apply_init_if_needed(needs_init, raw)
local expires = NOW + tonumber(ARGV[11])
local record = 'O|' .. fmt(amount) .. '|' .. fmt(expires) .. '|' .. ARGV[10] .. '|' .. APP
local reply = commit('reserve', -amount, bal - amount, ARGV[10], APP, ARGV[12], '', ARGV[13],
                     function(id)
                       redis.call('HSET', K_HOLDS, id, record)
                       redis.call('ZADD', K_HOLD_EXP, expires, id)
                       if controlled then controlled(id) end
                     end, ',"x":' .. fmt(expires) .. draw_for_entry(amount))
reply[#reply + 1] = record
return reply
