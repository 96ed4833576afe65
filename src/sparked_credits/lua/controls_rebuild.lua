--: argv last_id day spent_day month spent_month
--: keys controls
--: reply rebuilt
-- The spend windows of an account, counted again from its ledger by the full repair
-- (controls.py, rebuild_windows) after a torn script may have lost a count: written only
-- if the ledger's last entry is still `last_id` (else 'moved': count again), only for an
-- account that still has a limit ('none'), and never below what the scripts counted in
-- the same window (a lost give-back leaves a count too high, the safe way).
-- ARGV[9] last entry id read, ARGV[10] UTC day, ARGV[11] spent in it, ARGV[12] UTC month,
-- ARGV[13] spent in it.
local K_CTL = KEYS[11]
local newest = redis.call('XREVRANGE', K_TXS, '+', '-', 'COUNT', 1)
local last = ''
if #newest > 0 then last = newest[1][1] end
if last ~= ARGV[9] then return {'moved'} end
local c = redis.call('HMGET', K_CTL, 'daily', 'monthly', 'd', 'ds', 'm', 'ms')
if not (tonumber(c[1] or '') or tonumber(c[2] or '')) then return {'none'} end
local day, month = tonumber(ARGV[10]), tonumber(ARGV[12])
local ds, ms = tonumber(ARGV[11]), tonumber(ARGV[13])
if tonumber(c[3] or '') == day then ds = math.max(ds, tonumber(c[4] or '0')) end
if tonumber(c[5] or '') == month then ms = math.max(ms, tonumber(c[6] or '0')) end
redis.call('HSET', K_CTL, 'd', fmt(day), 'ds', fmt(ds), 'm', fmt(month), 'ms', fmt(ms))
return {'rebuilt', fmt(ds), fmt(ms)}
