--: argv hold_id actual allow_overage reason metadata
--: keys controls alerts
--: reply mutation
--: refusals hold_not_found hold_expired hold_closed overage insufficient spend_limit conflict replay_gone
-- settle: keep `actual` of an open hold and give back the rest, in one entry whose delta is
-- reserved - actual (the hold record's 'captured' is derived: reserved - delta). Above the
-- reserved amount only with allow_overage, and only when the balance covers the
-- difference. ARGV[9] hold id, ARGV[10] actual, ARGV[11] allow overage, ARGV[12] reason,
-- ARGV[13] metadata JSON.
K_CTL_EXPIRY = KEYS[11]  -- an expired hold gives its spend window back (prelude.lua)
local replay = idem_lookup()
if replay then return replay end
local hid = ARGV[9]
local hold, refusal = open_hold(hid)
if not hold then return refusal end
local actual = tonumber(ARGV[10])
local delta = hold.amount - actual
local bal = tonumber(redis.call('GET', K_BAL) or '0')
if delta < 0 then
  if ARGV[11] ~= '1' then return {'overage', fmt(hold.amount), fmt(actual)} end
  if bal + delta < 0 then return {'insufficient', fmt(bal), fmt(-delta)} end
end
-- The unused part gives the reserve's spend window back; an overage spends now.
local limited, controlled = controls(KEYS[11], KEYS[12], -delta, hid, bal, bal + delta,
                                       ARGV[13])
if limited then return limited end
-- What is not kept goes back to the hold's lots, the last drawn first (the kept part is
-- the head of its draws); an overage draws more in consumption order.
local sc, lapsed = '', {}
if delta > 0 then
  local back
  back, lapsed = lots_give_back(lots_of_entry(hid), delta, 0, lots_owed(bal))
  sc = ',"l":"' .. lots_encode(back) .. '"'
elseif delta < 0 then
  sc = draw_for_entry(-delta)
end
local reply = commit('settle', delta, bal + delta, hold.action, hold.app, ARGV[12], hid,
                     ARGV[13], function(id)
                       redis.call('HSET', K_HOLDS, hid,
                                  'S|' .. fmt(hold.amount) .. '|' .. fmt(actual))
                       redis.call('ZREM', K_HOLD_EXP, hid)
                       if controlled then controlled(id) end
                     end, sc)
-- Reply elements 14 and 15 when credits lapsed in this call (before or after the entry):
-- the balance after the whole call and the credits that lapsed.
local final = lots_lapse_all(lapsed, (bal + delta))
if lot_lapsed > 0 then reply[14], reply[15] = fmt(final), fmt(lot_lapsed) end
return reply
