--: reply balance
-- balance: the balance as the next script would leave it once it lapsed every lot past its
-- expiry (server time): GET minus what those lots have left. It writes nothing (a reader),
-- so get_balance stays one round trip and never shows credits that have lapsed.
-- Reply {'balance', balance} ({'balance'} for an account never written).
--
-- @fast: scripts.py puts this block BEFORE the prelude.
-- The common case without the prelude (whose closures Redis would make on every call): no
-- lots, or none due by the summary's soonest expiry. It only reads, like the rest.
do
  local raw = redis.call('GET', KEYS[1])
  if not raw then return {'balance'} end
  local summary = redis.call('HGET', KEYS[8], '')
  if not summary then return {'balance', raw} end
  local soonest = string.match(summary, '^%-?%d+|(%d*)|')
  if soonest == '' then return {'balance', raw} end
  if soonest then
    local t = redis.call('TIME')
    if tonumber(soonest) > tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) then
      return {'balance', raw}
    end
  end
end
-- @end fast
local raw = redis.call('GET', K_BAL)
if not raw then return {'balance'} end
local bal = tonumber(raw)
local summary = redis.call('HGET', K_LOTS, LOT_SUM)
if not summary then return {'balance', raw} end
local t, e = string.match(summary, '^(%-?%d+)|(%d*)|')
local tracked, soonest = tonumber(t or summary) or 0, tonumber(e)
-- The common case: no lot is due (the summary keeps the soonest expiry of an open lot;
-- an earlier layout without it reads the expiry zset).
if t and (soonest == nil or soonest > NOW) then return {'balance', raw} end
local due = redis.call('ZRANGEBYSCORE', K_LOTEXP, '-inf', NOW)
if #due == 0 then return {'balance', raw} end
local left = {}
for i = 1, #due, 500 do
  local ids = {}
  for j = i, math.min(i + 499, #due) do ids[#ids + 1] = due[j] end
  local recs = redis.call('HMGET', K_LOTS, unpack(ids))
  for j = 1, #ids do
    left[ids[j]] = recs[j] and tonumber(string.match(recs[j], '^(%d+)|')) or 0
  end
end
-- Credits taken without touching lots (an older SDK's debit, an overdraft) are taken
-- from the lots in consumption order first (lots_catch_up): a due lot may be empty then.
local short = math.min(tracked - bal, tracked)
if short > 0 then
  local order = redis.call('ZRANGE', K_LOTQ, 0, -1)
  for i = 1, #order do
    if short <= 0 then break end
    local id = order[i]
    local n = left[id]
    if n == nil then
      local rec = redis.call('HGET', K_LOTS, id)
      n = rec and tonumber(string.match(rec, '^(%d+)|')) or 0
    end
    local take = math.min(n, short)
    short = short - take
    if left[id] ~= nil then left[id] = n - take end
  end
end
local lapsed = 0
for _, n in pairs(left) do lapsed = lapsed + n end
return {'balance', fmt(bal - lapsed)}
