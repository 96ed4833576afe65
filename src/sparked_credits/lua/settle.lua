-- settle: keep `actual` of an open hold and give back the rest, in one entry whose delta is
-- reserved - actual. Above the reserved amount only with allow_overage, and only when the
-- balance covers the difference. ARGV[7] hold id, ARGV[8] actual, ARGV[9] allow overage,
-- ARGV[10] reason, ARGV[11] metadata JSON.
local replay = idem_lookup()
if replay then return replay end
local hid = ARGV[7]
local hold, refusal = open_hold(hid)
if not hold then return refusal end
local actual = tonumber(ARGV[8])
local delta = hold.amount - actual
local bal = tonumber(redis.call('GET', K_BAL) or '0')
if delta < 0 then
  if ARGV[9] ~= '1' then return {'overage', fmt(hold.amount), fmt(actual)} end
  if bal + delta < 0 then return {'insufficient', fmt(bal), fmt(-delta)} end
end
redis.call('HSET', K_HOLDS, hid, 'S|' .. fmt(hold.amount) .. '|' .. fmt(actual))
redis.call('ZREM', K_HOLD_EXP, hid)
return commit('settle', delta, bal + delta, hold.action, hold.app, ARGV[10], hid, ARGV[11])
