--: argv entry_id amount reason metadata
--: keys refunds controls alerts
--: reply mutation
--: refusals not_found not_refundable fully_refunded refund_exceeds overflow conflict replay_gone
-- refund a debit or a settled hold, in full or in part, never more than it took in total.
-- KEYS[11] refunds hash (entry id -> credits refunded so far: derived from the refund
-- entries, whose ref names the refunded entry).
-- Credits go back to the lots the entry took them from, the last drawn first (after what
-- earlier partial refunds gave back); lots expired since lapse at once, each recorded.
-- ARGV[9] entry id, ARGV[10] amount ('' = all that is left), ARGV[11] reason,
-- ARGV[12] metadata.
K_CTL_EXPIRY = KEYS[12]  -- an expired hold gives its spend window back (prelude.lua)
local K_REFUNDS = KEYS[11]
local replay = idem_lookup()
if replay then return replay end
local eid = ARGV[9]
local found = redis.call('XRANGE', K_TXS, eid, eid)
if #found == 0 then return {'not_found', eid} end
local f = {}
local raw_fields = found[1][2]
for i = 1, #raw_fields, 2 do f[raw_fields[i]] = raw_fields[i + 1] end
local taken, reserved = 0, 0
if f['type'] == 'debit' then
  taken = -tonumber(f['delta'] or '0')
elseif f['type'] == 'settle' then
  -- What a settle took is what it captured, kept on the closed hold's record.
  local rec = redis.call('HGET', K_HOLDS, f['ref'] or '')
  if rec then
    local _, held, captured = parse_hold(rec)
    taken, reserved = tonumber(captured) or 0, tonumber(held) or 0
  end
end
if taken <= 0 then return {'not_refundable', f['type'] or ''} end
local done = tonumber(redis.call('HGET', K_REFUNDS, eid) or '0')
local left = taken - done
if left <= 0 then return {'fully_refunded', fmt(taken)} end
local amount = left
if ARGV[10] ~= '' then amount = tonumber(ARGV[10]) end
if amount > left then return {'refund_exceeds', fmt(left)} end
local bal = current_balance()
if bal + amount > MAX_CREDITS then return {'overflow', fmt(bal), fmt(amount)} end
-- The lots the entry took from: a debit's own draws; a settle's, the head of its hold's
-- draws (what it kept) and, after an overage, what the settle itself drew.
local draws = lots_decode(lots_in_meta(f['meta']))
if f['type'] == 'settle' then
  local kept = lots_head(lots_of_entry(f['ref'] or ''), math.min(taken, reserved))
  if taken > reserved then
    for i = 1, #draws do kept[#kept + 1] = draws[i] end
  end
  draws = kept
end
local back, lapsed = lots_give_back(draws, amount, done, lots_owed(bal))
-- The credits go back to the spend window the entry (a settle: its hold) counted in.
local window_of = eid
if f['type'] == 'settle' then window_of = f['ref'] or '' end
local _, controlled = controls(KEYS[12], KEYS[13], -amount, window_of, bal, bal + amount)
-- Carry the debit's action and app so usage by action or app nets out refunds.
local reply = commit('refund', amount, bal + amount, f['action'] or '', f['app'] or '', ARGV[11],
                     eid, ARGV[12], function(id)
                       redis.call('HINCRBY', K_REFUNDS, eid, amount)
                       if controlled then controlled(id) end
                     end, ',"l":"' .. lots_encode(back) .. '"')
-- Reply elements 14 and 15 when credits lapsed in this call (before or after the entry):
-- the balance after the whole call and the credits that lapsed.
local final = lots_lapse_all(lapsed, (bal + amount))
if lot_lapsed > 0 then reply[14], reply[15] = fmt(final), fmt(lot_lapsed) end
return reply
