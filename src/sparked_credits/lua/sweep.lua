--: argv limit
--: keys controls
--: reply swept
-- sweep: return up to ARGV[9] expired holds of one account and lapse up to ARGV[9] of its
-- lots past their expiry; reply {'swept', n, still_due}.
K_CTL_EXPIRY = KEYS[11]  -- an expired hold gives its spend window back (prelude.lua)
lots_catch_up(tonumber(redis.call('GET', K_BAL) or '0'))
local n = expire_due(tonumber(ARGV[9])) + lots_expire_due(tonumber(ARGV[9]))
lots_apply()
local left = redis.call('ZCOUNT', K_HOLD_EXP, '-inf', NOW) +
             redis.call('ZCOUNT', K_LOTEXP, '-inf', NOW)
return {'swept', fmt(n), fmt(left)}
