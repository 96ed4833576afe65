--: argv tier daily monthly low period start
--: keys controls plan_tiers
--: reply controls
-- A paid period's plan tier (plan_tiers.py), in one script with its marker, so a period
-- sets the tier once whatever delivers it, however often and concurrently:
--   KEYS[12] (hash) maps each period applied to its tier, and '' to the latest applied
--   period's start (ms). A period already there answers 'repeat' and writes nothing (an
--   operator's tier change since then stays); a period that starts before the latest
--   answers 'older' and writes nothing (an older invoice delivered after a newer one never
--   puts back the older plan's tier).
-- Otherwise it writes the controls as set_tier.lua does (taking the meta hash's 'noctl'
-- mark with them) and the marker. ARGV[9] tier, ARGV[10..12] daily and monthly limits and
-- threshold ('' = none), ARGV[13] period id, ARGV[14] period start (ms).
-- Reply {'set', 'set' | 'repeat' | 'older'}.
local K_CTL, K_PLANS = KEYS[11], KEYS[12]
if redis.call('HEXISTS', K_PLANS, ARGV[13]) == 1 then return {'set', 'repeat'} end
local start = tonumber(ARGV[14])
local latest = tonumber(redis.call('HGET', K_PLANS, '') or '')
if latest and start < latest then return {'set', 'older'} end
redis.call('HDEL', K_META, 'noctl')
redis.call('HSET', K_CTL, 'tier', ARGV[9], 'daily', ARGV[10], 'monthly', ARGV[11],
           'low', ARGV[12])
redis.call('HSET', K_PLANS, ARGV[13], ARGV[9], '', ARGV[14])
return {'set', 'set'}
