--: argv grant_id amount reason metadata once
--: keys once controls
--: reply revoke
--: refusals not_found conflict replay_gone
-- revoke: take back up to ARGV[10] credits ('' = all the lot still owes: its amount less
-- what earlier revokes took) of what is still UNSPENT in one lot, with a 'revoke' entry
-- (not usage, not a debit): delta -revoked, action the lot's source, ref the lot,
-- '_sc.l' the lot drawn from, '_sc.u' what was asked for but is already spent (or lapsed,
-- or held): unrecoverable. Never below zero: a lot never holds more than the balance.
-- ARGV[9] the lot: its id, or 'purchase:<payment id>' / 'allocate:<period id>' (the lot
-- that key opened, found in KEYS[11]); ARGV[11] reason, ARGV[12] metadata; ARGV[13] '1'
-- records the key forever in KEYS[11] as 'revoke:<key>' (a caller's key: a refund or a
-- dispute that Stripe redelivers for days), also when nothing could be taken.
-- Reply {'revoked', replayed, revoked, unrecoverable, balance, <mutation reply>} or, when
-- nothing was left to take, {'revoked', replayed, '0', unrecoverable, balance} (no entry).
K_CTL_EXPIRY = KEYS[12]  -- an expired hold gives its spend window back (prelude.lua)
local K_ONCE = KEYS[11]
local ONCE_FIELD = 'revoke:' .. IDEM_KEY
local once = ARGV[13] == '1'

local function revoked_reply(r, u)
  if not u then u = string.match(r[12], '^{"_sc":{[^}]*"u":(%d+)') or '0' end
  local out = {'revoked', r[2], fmt(-tonumber(r[5])), u, r[6]}
  for i = 1, #r do out[#out + 1] = r[i] end
  return out
end

if once then
  local prior = once_lookup(K_ONCE, ONCE_FIELD)
  if prior then
    if prior[1] == 'ok' then return revoked_reply(prior) end
    if prior[1] == 'none' then
      local u, fp = string.match(prior[2], '^%-(%d+)|(.*)$')
      if fp ~= FINGERPRINT then return {'conflict'} end
      return {'revoked', '1', '0', u, redis.call('GET', K_BAL) or '0'}
    end
    return prior
  end
end
local replay = idem_lookup()
if replay then
  if replay[1] == 'ok' then return revoked_reply(replay) end
  return replay
end
local gid = ARGV[9]
if not string.match(gid, '^%d+%-%d+$') then
  gid = redis.call('HGET', K_ONCE, gid)
  if not gid or string.sub(gid, 1, 1) == '-' then return {'not_found', ARGV[9]} end
end
if not redis.call('HGET', K_LOTS, gid) then return {'not_found', ARGV[9]} end
local bal = current_balance()
local lot = lot_get(gid)
local tally_field = 'revoked:' .. gid
local asked
if ARGV[10] == '' then
  asked = math.max(lot.amount - tonumber(redis.call('HGET', K_ONCE, tally_field) or '0'), 0)
else
  asked = tonumber(ARGV[10])
end
local n = math.min(asked, math.max(lot.remaining, 0))
local u = fmt(asked - n)
if n == 0 then
  lots_apply()
  if once then redis.call('HSET', K_ONCE, ONCE_FIELD, '-' .. u .. '|' .. FINGERPRINT) end
  return {'revoked', '0', '0', u, fmt(bal)}
end
lot_change(lot, -n)
local l = gid .. ':' .. fmt(n)
local reply = commit('revoke', -n, bal - n, lot.source, APP, ARGV[11], gid, ARGV[12],
                     function(id)
                       redis.call('HINCRBY', K_ONCE, tally_field, n)
                       if once then redis.call('HSET', K_ONCE, ONCE_FIELD, id) end
                     end, ',"l":"' .. l .. '","u":' .. u, l)
return revoked_reply(reply, u)
