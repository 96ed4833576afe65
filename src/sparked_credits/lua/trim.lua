--: argv prior last sum count lots drop n minid
--: reply trimmed
-- trim: the guarded write of a trim the pure core planned (_core/trimming.py). The core
-- read the n entries after the prior trim base (ARGV[9], '' for none) up to and including
-- ARGV[10], replayed them onto the base (the one lots replay: _core/lots.py LotBook) and
-- sends the new base: sum ARGV[11], count ARGV[12], the lots as of it ARGV[13] ('id=record
-- id=record ...', '' for none; '-' keeps base_lots absent: a base trimmed by an earlier
-- version without them stays unreplayable). ARGV[14]: drained lots no entry left in Redis
-- names (space-separated ids), whose records leave the lots hash after the trim (each only
-- if its record still holds nothing). Written only if the ledger has not moved: the
-- base is still ARGV[9], the same n entries end at ARGV[10], and ARGV[10] is below the
-- last reconciliation checkpoint (the checkpoint's running sum stands for everything up to
-- it); otherwise {'moved'} (plan again). XTRIM MINID ARGV[16] (the id right after ARGV[10]),
-- never MAXLEN ('~' would cut whole nodes past the point).
-- The base is written BEFORE the XTRIM: a prefix that stops between the two leaves a base
-- that already stands for entries still present, which the full pass skips (it starts
-- after base_id) and the next trim finishes first; the cheap pass sees the count and falls
-- back to the full pass. Reply {'trimmed', n, minid}, {'no_checkpoint'} or {'moved'}.
local had = redis.call('HMGET', K_META, 'base_id', 'ckpt_id')
if (had[1] or '') ~= ARGV[9] then return {'moved'} end
if not had[2] then return {'no_checkpoint'} end
local function older(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  if #am ~= #bm then return #am < #bm end
  if am ~= bm then return am < bm end
  return tonumber(as) < tonumber(bs)
end
-- Finish a trim cut off between its base and its XTRIM first: the entries the base already
-- stands for must not join it again (the core read from after the base on).
if ARGV[9] ~= '' then
  local ms, seq = string.match(ARGV[9], '^(%d+)-(%d+)$')
  redis.call('XTRIM', K_TXS, 'MINID', ms .. '-' .. fmt(tonumber(seq) + 1))
end
local n = tonumber(ARGV[15])
if n == 0 then return {'trimmed', '0', ARGV[16]} end
if older(had[2], ARGV[10]) then return {'moved'} end
local start = '-'
if ARGV[9] ~= '' then start = '(' .. ARGV[9] end
local got = redis.call('XRANGE', K_TXS, start, ARGV[10], 'COUNT', n + 1)
if #got ~= n or got[n][1] ~= ARGV[10] then return {'moved'} end
if ARGV[13] == '-' then
  redis.call('HSET', K_META, 'base_id', ARGV[10], 'base_sum', ARGV[11], 'base_count', ARGV[12])
else
  redis.call('HSET', K_META, 'base_id', ARGV[10], 'base_sum', ARGV[11], 'base_count', ARGV[12],
             'base_lots', ARGV[13])
end
local removed = redis.call('XTRIM', K_TXS, 'MINID', ARGV[16])
for id in string.gmatch(ARGV[14], '[^ ]+') do
  local rec = redis.call('HGET', K_LOTS, id)
  if rec and string.sub(rec, 1, 2) == '0|' then redis.call('HDEL', K_LOTS, id) end
end
return {'trimmed', fmt(removed), ARGV[16]}
