--: argv before
--: reply trimmed
-- trim an account's ledger: remove entries older than ARGV[9] (an entry id), but never an
-- entry after the last reconciliation checkpoint (the checkpoint's running sum stands for
-- everything up to it) nor an open hold's reserve entry (a full repair rebuilds the hold
-- from it). XTRIM MINID, never MAXLEN ('~' would cut whole nodes past the point).
-- The removed entries' sum and count join the trim base (meta base_id/base_sum/base_count)
-- BEFORE the XTRIM: a prefix that stops between the two leaves a base that already stands
-- for entries still present, which the full pass skips (it starts after base_id) and
-- finishes trimming; the cheap pass sees the count and falls back to the full pass.
-- Reply {'trimmed', n, minid} or {'no_checkpoint'}.
local ck = redis.call('HGET', K_META, 'ckpt_id')
if not ck then return {'no_checkpoint'} end
local function older(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  if #am ~= #bm then return #am < #bm end
  if am ~= bm then return am < bm end
  return tonumber(as) < tonumber(bs)
end
local minid = ARGV[9]
if older(ck, minid) then minid = ck end
local open = redis.call('ZRANGE', K_HOLD_EXP, 0, -1)
for i = 1, #open do
  if older(open[i], minid) then minid = open[i] end
end
local gone = redis.call('XRANGE', K_TXS, '-', '(' .. minid)
if #gone == 0 then return {'trimmed', '0', minid} end
local base = redis.call('HMGET', K_META, 'base_sum', 'base_count')
local s, n = tonumber(base[1] or '0'), tonumber(base[2] or '0')
for i = 1, #gone do
  local f = gone[i][2]
  for j = 1, #f, 2 do
    if f[j] == 'delta' then s = s + (tonumber(f[j + 1]) or 0) break end
  end
end
redis.call('HSET', K_META, 'base_id', gone[#gone][1], 'base_sum', fmt(s),
           'base_count', fmt(n + #gone))
local removed = redis.call('XTRIM', K_TXS, 'MINID', minid)
return {'trimmed', fmt(removed), minid}
