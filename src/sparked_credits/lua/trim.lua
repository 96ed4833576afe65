-- trim an account's ledger: remove entries older than ARGV[7] (an entry id), but never an
-- entry after the last reconciliation checkpoint: the checkpoint's running sum stands for
-- everything up to it, so sum-based reconciliation still adds up. XTRIM MINID, never
-- MAXLEN ('~' would cut whole nodes past the point). Reply {'trimmed', n, minid} or
-- {'no_checkpoint'}.
local ck = redis.call('HGET', K_META, 'ckpt_id')
if not ck then return {'no_checkpoint'} end
local function older(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  if #am ~= #bm then return #am < #bm end
  if am ~= bm then return am < bm end
  return tonumber(as) < tonumber(bs)
end
local minid = ARGV[7]
if older(ck, minid) then minid = ck end
local n = redis.call('XTRIM', K_TXS, 'MINID', minid)
return {'trimmed', fmt(n), minid}
