--: argv hold_id reason metadata
--: keys controls alerts
--: reply mutation
--: refusals hold_not_found hold_expired hold_closed conflict replay_gone
-- release: give an open hold's credits back in full (the work failed or was cancelled).
-- ARGV[9] hold id, ARGV[10] reason, ARGV[11] metadata JSON.
K_CTL_EXPIRY = KEYS[11]  -- an expired hold gives its spend window back (prelude.lua)
local replay = idem_lookup()
if replay then return replay end
local hid = ARGV[9]
local hold, refusal = open_hold(hid)
if not hold then return refusal end
local bal = tonumber(redis.call('GET', K_BAL) or '0')
local after = bal + hold.amount
local _, controlled = controls(KEYS[11], KEYS[12], -hold.amount, hid, bal, after)
-- Back to the hold's lots (an overdraft owed first); those expired since lapse at once,
-- each with its own entry.
local back, lapsed = lots_give_back(lots_of_entry(hid), hold.amount, 0, lots_owed(bal))
local reply = commit('release', hold.amount, after, hold.action, hold.app, ARGV[10], hid,
                     ARGV[11], function(id)
                       redis.call('HSET', K_HOLDS, hid, 'R|' .. fmt(hold.amount))
                       redis.call('ZREM', K_HOLD_EXP, hid)
                       if controlled then controlled(id) end
                     end, ',"l":"' .. lots_encode(back) .. '"')
-- Reply elements 14 and 15 when credits lapsed in this call (before or after the entry):
-- the balance after the whole call and the credits that lapsed.
local final = lots_lapse_all(lapsed, after)
if lot_lapsed > 0 then reply[14], reply[15] = fmt(final), fmt(lot_lapsed) end
return reply
