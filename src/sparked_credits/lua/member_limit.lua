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
-- Write order (a torn prefix must never leave a limit unenforced): the marks that make
-- the scripts look first ('noctl' taken, 'mlim' put, the count raised), the limits, then
-- what may lower the marks (the count, 'mlim' when nothing is left).
redis.call('HDEL', K_META, 'noctl')
local clear = daily == '' and monthly == ''
if not clear then redis.call('HSET', K_CTL, 'mlim', '1') end
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
      redis.call('HSET', K_CTL, 'mlc', fmt(math.max(count - 1, 0)))
    end
  else
    if not had then redis.call('HSET', K_CTL, 'mlc', fmt(count + 1)) end
    redis.call('HSET', K_CTL, field, daily .. '|' .. monthly)
  end
end
local left = redis.call('HMGET', K_CTL, 'mdaily', 'mmonthly', 'mlc')
if (left[1] or '') == '' and (left[2] or '') == '' and tonumber(left[3] or '0') <= 0 then
  redis.call('HDEL', K_CTL, 'mlim', 'mlc')
end
return {'set'}
