-- close: the account takes no new debits or reservations from now on (its user was
-- deleted); the balance, ledger and open holds stay, so history and reconciliation still
-- work. Once per account: a repeat replies with the first close entry, replayed.
-- The entry has delta 0 (like an init of 0 credits), so balance == sum of deltas holds,
-- and the ledger itself says when, why and by which app the account was closed.
-- ARGV[7] reason, ARGV[8] metadata JSON.
local closed = redis.call('HGET', K_META, 'closed')
local bal = tonumber(redis.call('GET', K_BAL) or '0')
if closed then
  local found = redis.call('XRANGE', K_TXS, closed, closed)
  if #found > 0 then return reply_entry(found[1][1], entry_values(found[1][2]), '1') end
  -- The close entry was trimmed away (trim.lua): still closed once, never a second entry.
  return reply_entry(closed, {'close', '0', fmt(bal), 'close_account', '', '', '', 'close', ''},
                     '1')
end
local id, values = append('close', 0, bal, 'close_account', APP, ARGV[7], '', IDEM_KEY, ARGV[8])
redis.call('HSET', K_META, 'closed', id)
return reply_entry(id, values, '0')
