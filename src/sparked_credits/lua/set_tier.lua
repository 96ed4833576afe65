--: argv tier daily monthly low drop
--: keys controls
--: reply controls
-- Puts an account's controls (controls.py, set_tier): ARGV[9] tier name, ARGV[10..12] daily
-- and monthly limits and low-balance threshold ('' = none); ARGV[13] = '1' drops the hash.
-- In the same script it takes away the meta hash's 'noctl' mark (prelude.lua, above the
-- '@fast' line), which lets a debit's fast block skip the controls: the mark says "no
-- controls seen", only a general-path debit that found none puts it back, so a lost mark
-- only costs one general-path debit and a mark is never left beside live controls.
local K_CTL = KEYS[11]
redis.call('HDEL', K_META, 'noctl')
if ARGV[13] == '1' and redis.call('HEXISTS', K_CTL, 'mlim') == 1 then
  -- Off its tier, its members' limits stay (member_limit.lua): only the tier's part goes.
  redis.call('HDEL', K_CTL, 'tier', 'daily', 'monthly', 'low', 'd', 'ds', 'm', 'ms', 'fired')
elseif ARGV[13] == '1' then
  redis.call('DEL', K_CTL)
else
  redis.call('HSET', K_CTL, 'tier', ARGV[9], 'daily', ARGV[10], 'monthly', ARGV[11],
             'low', ARGV[12])
end
return {'set'}
