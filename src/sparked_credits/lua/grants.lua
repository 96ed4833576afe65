--: argv limit
--: keys controls
--: reply lots
-- grants: an account's open lots in consumption order, after returning up to ARGV[9]
-- expired holds and lapsing up to ARGV[9] lots past their expiry (like any script that
-- touches the account), so what it lists adds up to the balance.
-- Reply {'lots', balance, tracked, still_due, id, record, id, record, ...}.
K_CTL_EXPIRY = KEYS[11]  -- an expired hold gives its spend window back (prelude.lua)
lots_catch_up(tonumber(redis.call('GET', K_BAL) or '0'))
local limit = tonumber(ARGV[9])
expire_due(limit)
lots_expire_due(limit)
lots_apply()
local due = redis.call('ZCOUNT', K_HOLD_EXP, '-inf', NOW) +
            redis.call('ZCOUNT', K_LOTEXP, '-inf', NOW)
local out = {'lots', redis.call('GET', K_BAL) or '0', fmt(lots_tracked()), fmt(due)}
local records = lots_open_records()
for i = 1, #records do out[#out + 1] = records[i] end
return out
