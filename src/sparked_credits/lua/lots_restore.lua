--: argv last_id records
--: reply restored
-- lots_restore: replace an account's lots with those its ledger implies (a full repair).
-- ARGV[9] the last entry id the caller replayed up to ('' = empty ledger): if the ledger
-- moved on since, nothing is written and the reply is {'moved'} (replay again).
-- ARGV[10] the lots: 'id=record' pairs separated by spaces ('' as the id: the tracked
-- sum). Reply {'restored', n}. A prefix of these writes is repaired by running it again.
local last = redis.call('XREVRANGE', K_TXS, '+', '-', 'COUNT', 1)
local head = ''
if #last > 0 then head = last[1][1] end
if head ~= ARGV[9] then return {'moved'} end
redis.call('DEL', K_LOTS, K_LOTQ, K_LOTEXP)
local n = 0
for id, rec in string.gmatch(ARGV[10], '([^ =]*)=([^ ]*)') do
  redis.call('HSET', K_LOTS, id, rec)
  if id ~= LOT_SUM then
    local lot = lot_from(id, rec)
    if lot.remaining > 0 then
      redis.call('ZADD', K_LOTQ, lot_score(lot), id)
      if lot.expires then redis.call('ZADD', K_LOTEXP, lot.expires, id) end
    end
    n = n + 1
  end
end
return {'restored', fmt(n)}
