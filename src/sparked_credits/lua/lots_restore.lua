--: argv last_id records marks
--: reply restored
-- lots_restore: replace an account's lots with those its ledger implies (a full repair).
-- ARGV[9] the last entry id the caller replayed up to ('' = empty ledger): if the ledger
-- moved on since, nothing is written and the reply is {'moved'} (replay again).
-- ARGV[10] the lots: 'id=record' pairs separated by spaces. The zsets and the summary
-- (lots.lua) are derived here from the records. ARGV[11] the meta marks the ledger implies
-- (prelude.lua), '<lots_all>|<opened>': '1' set, '' cleared, '-' left as it is.
-- Reply {'restored', n}.
-- A prefix of these writes is repaired by running it again.
local last = redis.call('XREVRANGE', K_TXS, '+', '-', 'COUNT', 1)
local head = ''
if #last > 0 then head = last[1][1] end
if head ~= ARGV[9] then return {'moved'} end
redis.call('HDEL', K_META, 'fv')  -- the debit's fast view (prelude.lua)
redis.call('DEL', K_LOTS, K_LOTQ, K_LOTEXP)
local n, tracked = 0, 0
for id, rec in string.gmatch(ARGV[10], '([^ =]+)=([^ ]*)') do
  redis.call('HSET', K_LOTS, id, rec)
  local lot = lot_from(id, rec)
  if lot.remaining > 0 then
    redis.call('ZADD', K_LOTQ, lot_score(lot), id)
    if lot.expires then redis.call('ZADD', K_LOTEXP, lot.expires, id) end
  end
  tracked = tracked + lot.remaining
  n = n + 1
end
local first = lots_slice(0, 1)
local soonest = redis.call('ZRANGE', K_LOTEXP, 0, 0, 'WITHSCORES')
local summary = fmt(tracked) .. '|'
if #soonest > 0 then summary = summary .. fmt(tonumber(soonest[2])) end
summary = summary .. '|'
if #first > 0 then summary = summary .. first[1] .. '|' .. lot_record(lot_cache[first[1]]) end
redis.call('HSET', K_LOTS, LOT_SUM, summary)
local marks = {string.match(ARGV[11], '^([^|]*)|([^|]*)$')}
local names = {'lots_all', 'opened'}
for i = 1, 2 do
  if marks[i] == '1' then
    redis.call('HSET', K_META, names[i], '1')
  elseif marks[i] == '' then
    redis.call('HDEL', K_META, names[i])
  end
end
return {'restored', fmt(n)}
