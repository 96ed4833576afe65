--: argv reason metadata
--: reply mutation
--: refusals conflict replay_gone
-- close: the account takes no new debits or reservations from now on (its user was
-- deleted); the balance, ledger and open holds stay, so history and reconciliation still
-- work. Once per account: a repeat replies with the first close entry, replayed (not when
-- it is this same call re-sent: the entry carries the call's nonce).
-- The entry has delta 0 (like an init of 0 credits), so balance == sum of deltas holds,
-- and the ledger itself says when, why and by which app the account was closed.
-- Unit order: XADD, then the meta mark (a prefix without the mark is harmless: delta 0,
-- and the full repair restores the mark). ARGV[9] reason, ARGV[10] metadata JSON.
local closed = redis.call('HGET', K_META, 'closed')
local bal = tonumber(redis.call('GET', K_BAL) or '0')
if closed then
  local found = redis.call('XRANGE', K_TXS, closed, closed)
  if #found > 0 then
    local values = entry_values(found[1][2])
    local _, nonce = sc_fields(values[9])
    return reply_entry(found[1][1], values, replayed_flag(nonce))
  end
  -- The close entry was trimmed away (trim.lua): still closed once, never a second entry.
  return reply_entry(closed, {'close', '0', fmt(bal), 'close_account', '', '', '', 'close', ''},
                     '1')
end
local id, values = append('close', 0, bal, 'close_account', APP, ARGV[9], '', IDEM_KEY, ARGV[10],
                          sc_meta(ARGV[10]))
redis.call('HSET', K_META, 'closed', id)
return reply_entry(id, values, '0')
