--: argv records rewards
--: keys referrals
--: reply restored
-- referral_restore: the referral marks (referral.lua) that the ledger implies, as the full
-- repair found them replaying it (controls_repair.py), derived state like the rest: a
-- torn referral whose entry stayed and whose mark was lost gets its mark back, so the
-- referral stays once ever after the idempotency record's retention too.
-- ARGV[9] 'field<TAB>value' lines ('referred_by' or 'referral:<referred>'; accounts hold
-- no whitespace): put only where missing (a mark the scripts wrote stays, first wins);
-- ARGV[10] the ids of the account's rewards as referrer, space separated: the current UTC
-- month's count 'rm'/'rc' is raised to the number of them in that month, never lowered.
-- Safe to run again. Reply {'restored', fields written}.
local K_REF = KEYS[11]
local n = 0
for field, value in string.gmatch(ARGV[9], '([^\t\n]+)\t([^\n]*)') do
  n = n + redis.call('HSETNX', K_REF, field, value)
end
local month, count = utc_month(NOW), 0
for ms in string.gmatch(ARGV[10], '(%d+)%-%d+') do
  if utc_month(tonumber(ms)) == month then count = count + 1 end
end
if count > 0 then
  local got = redis.call('HMGET', K_REF, 'rm', 'rc')
  local have = 0
  if tonumber(got[1] or '') == month then have = tonumber(got[2] or '0') end
  if count > have then
    redis.call('HSET', K_REF, 'rm', fmt(month), 'rc', fmt(count))
    n = n + 1
  end
end
return {'restored', fmt(n)}
