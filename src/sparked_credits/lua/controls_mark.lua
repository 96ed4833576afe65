--: argv
--: keys controls
--: reply controls
-- The full repair's rebuild of the meta hash's 'noctl' mark (prelude.lua, above '@fast'),
-- derived state: taken away where the controls hash holds anything controls() acts on (a
-- limit, a threshold, a window, an arming, a member limit), which only a writer that does
-- not know the mark (an earlier SDK's set_tier, a hand edit) leaves beside it; put where
-- the account's meta hash exists and there are none, as a general-path debit would.
-- Replies {'set', mark}.
local c = redis.call('HMGET', KEYS[11], 'daily', 'monthly', 'low', 'd', 'm', 'fired', 'mlim')
if tonumber(c[1] or '') or tonumber(c[2] or '') or tonumber(c[3] or '') or c[4] or c[5]
   or c[6] or c[7] then
  redis.call('HDEL', K_META, 'noctl')
  return {'set', '0'}
end
if redis.call('EXISTS', K_META) == 0 then return {'set', '0'} end
redis.call('HSET', K_META, 'noctl', '1')
return {'set', '1'}
