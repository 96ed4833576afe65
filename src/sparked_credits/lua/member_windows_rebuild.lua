--: argv last_id day month records
--: keys controls
--: reply rebuilt
-- The members' spend windows (prelude.lua, member_window) counted again from the ledger by
-- the full repair (member_limits.py, rebuild_member_windows) after a torn script may have
-- lost a count: written only if the ledger's last entry is still ARGV[9] (else 'moved'),
-- only for members with a limit, and never below what the scripts counted in the same
-- window. ARGV[10] UTC day, ARGV[11] UTC month, ARGV[12] 'member<TAB>day spent<TAB>month
-- spent' lines (members hold no whitespace). Reply {'rebuilt', members written}.
local K_CTL = KEYS[11]
local newest = redis.call('XREVRANGE', K_TXS, '+', '-', 'COUNT', 1)
local last = ''
if #newest > 0 then last = newest[1][1] end
if last ~= ARGV[9] then return {'moved'} end
local day, month, n = tonumber(ARGV[10]), tonumber(ARGV[11]), 0
for member, ds, ms in string.gmatch(ARGV[12], '([^\t\n]+)\t(%d+)\t(%d+)') do
  local got = redis.call('HMGET', K_CTL, 'mdaily', 'mmonthly', 'ml:' .. member, 'mw:' .. member)
  local limited = (got[1] or '') ~= '' or (got[2] or '') ~= ''
  if got[3] then limited = string.match(got[3], '%d') ~= nil end
  if limited then
    ds, ms = tonumber(ds), tonumber(ms)
    local wd, wds, wm, wms = string.match(got[4] or '', '^(%d+)|(%d+)|(%d+)|(%d+)$')
    if tonumber(wd or '') == day then ds = math.max(ds, tonumber(wds)) end
    if tonumber(wm or '') == month then ms = math.max(ms, tonumber(wms)) end
    redis.call('HSET', K_CTL, 'mw:' .. member,
               fmt(day) .. '|' .. fmt(ds) .. '|' .. fmt(month) .. '|' .. fmt(ms))
    n = n + 1
  end
end
return {'rebuilt', fmt(n)}
