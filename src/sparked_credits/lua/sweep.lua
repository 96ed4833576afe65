-- sweep: return up to ARGV[9] expired holds of one account; reply {'swept', n, still_due}.
local n = expire_due(tonumber(ARGV[9]))
local left = redis.call('ZCOUNT', K_HOLD_EXP, '-inf', NOW)
return {'swept', fmt(n), fmt(left)}
