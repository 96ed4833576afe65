--: argv member daily monthly
--: keys controls
--: reply controls
-- Per-member spend limits inside an organization's account (controls.py,
-- set_member_limit; enforced by prelude.lua's member_window): ARGV[9] the member ('' for
-- every member's limits), ARGV[10] daily and ARGV[11] monthly limit ('' for none; both ''
-- removes them: for a member, its own entry goes and every member's limits apply again).
-- A member's own entry ('ml:<member>') wins over every member's. 'mlim' marks the hash while any limit is set ('mlc' counts the members' own), so
-- the scripts look for a member only then. Like set_tier.lua it takes away the meta
-- hash's 'noctl' mark, so a debit's fast block never skips these.
-- Reply {'set'}.
local K_CTL, member, daily, monthly = KEYS[11], ARGV[9], ARGV[10], ARGV[11]
redis.call('HDEL', K_META, 'noctl')
local clear = daily == '' and monthly == ''
if member == '' then
  if clear then
    redis.call('HDEL', K_CTL, 'mdaily', 'mmonthly')
  else
    redis.call('HSET', K_CTL, 'mdaily', daily, 'mmonthly', monthly)
  end
else
  local field = 'ml:' .. member
  local had = redis.call('HEXISTS', K_CTL, field) == 1
  local count = tonumber(redis.call('HGET', K_CTL, 'mlc') or '0')
  if clear then
    if had then
      redis.call('HDEL', K_CTL, field)
      count = count - 1
    end
  else
    redis.call('HSET', K_CTL, field, daily .. '|' .. monthly)
    if not had then count = count + 1 end
  end
  redis.call('HSET', K_CTL, 'mlc', fmt(math.max(count, 0)))
end
local shared = redis.call('HMGET', K_CTL, 'mdaily', 'mmonthly', 'mlc')
if (shared[1] or '') ~= '' or (shared[2] or '') ~= '' or tonumber(shared[3] or '0') > 0 then
  redis.call('HSET', K_CTL, 'mlim', '1')
else
  redis.call('HDEL', K_CTL, 'mlim', 'mlc')
end
return {'set'}
