--: reply lots
-- lots_dump: every lot record of an account, and the members of its two lot indexes, for
-- the full reconcile to compare with the lots the ledger implies. Reply {'lots', last entry
-- id ('' = empty ledger), base ('0': not trimmed, '1': trimmed by an earlier version that
-- kept no lots at its base, '2': trimmed, with them), base_id, base_sum, base_lots (the
-- lots as of the base, see _core/trimming.py), the meta marks 'lots_all' and 'opened'
-- (prelude.lua) as '<lots_all>|<opened>', n, id, record, ... (n pairs, the '' field with the
-- tracked sum among them), m, order member..., expiry member...} (m order members).
local last = redis.call('XREVRANGE', K_TXS, '+', '-', 'COUNT', 1)
local marks = redis.call('HMGET', K_META, 'lots_all', 'opened')
local out = {'lots', '', '0', '', '0', '', (marks[1] or '') .. '|' .. (marks[2] or '')}
if #last > 0 then out[2] = last[1][1] end
local base = redis.call('HMGET', K_META, 'base_id', 'base_sum', 'base_lots')
if base[1] then
  out[3], out[4], out[5] = '1', base[1], base[2] or '0'
  if base[3] then out[3], out[6] = '2', base[3] end
end
local all = redis.call('HGETALL', K_LOTS)
out[8] = fmt(#all / 2)
for i = 1, #all do out[#out + 1] = all[i] end
local order = redis.call('ZRANGE', K_LOTQ, 0, -1)
out[#out + 1] = fmt(#order)
for i = 1, #order do out[#out + 1] = order[i] end
local expiry = redis.call('ZRANGE', K_LOTEXP, 0, -1)
for i = 1, #expiry do out[#out + 1] = expiry[i] end
return out
