-- Floor 8 (benchmarks/bench_server_cpu.py --floor): the fewest in-script commands a debit
-- keeps every guarantee with on a layout of separate keys for the balance, the ledger, the
-- idempotency generation and the account state, with everything the SDK derives (marks,
-- block sums, lots summary with the head lot's record, soonest hold expiry) merged into
-- the account hash: TIME, HMGET idempotency, HMGET account, GET, XADD, HSET account,
-- HSET idempotency, SET. Only the Lua that the SDK's fast block needs around them (the
-- lots summary parsed and written, block sums, the stored '_sc' meta, the SDK's reply).
-- Not a debit anyone should run: no general path behind it (it errors instead).
-- KEYS: balance, ledger, account hash, idempotency generation. ARGV: key, amount, action, app.
local t = redis.call('TIME')
local NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local key, amount = ARGV[1], tonumber(ARGV[2])
local got = redis.call('HMGET', KEYS[4], key, '')
if got[1] or NOW - tonumber(got[2]) >= 604800000 then error('general path') end
local m = redis.call('HMGET', KEYS[3], 'init', 'closed', 'n', 'bo', 'noctl', 'lots', 'hx')
if not m[1] or m[2] or not m[5] or (m[7] and tonumber(m[7]) <= NOW) then
  error('general path')
end
local bal = tonumber(redis.call('GET', KEYS[1]) or '0')
local tracked, soonest, head, rem, rest =
  string.match(m[6], '^(%-?%d+)|(%d*)|([^|]+)|(%d+)(|%d+|%d*|%d+|.*)$')
if not rem or tonumber(tracked) > bal or not (soonest == '' or tonumber(soonest) > NOW) then
  error('general path')
end
if bal < amount then return {'insufficient', string.format('%d', bal), ARGV[2]} end
local l = head .. ':' .. ARGV[2]
local after = string.format('%d', bal - amount)
local id = redis.call('XADD', KEYS[2], '*', 'type', 'debit', 'delta', '-' .. ARGV[2],
  'balance', after, 'action', ARGV[3], 'app', ARGV[4], 'reason', '', 'ref', '',
  'idem', key, 'meta', '{"_sc":{"l":"' .. l .. '"}}')
redis.call('HSET', KEYS[3], 'n', string.format('%d', tonumber(m[3]) + 1),
  'bo', string.format('%d', tonumber(m[4]) - amount),
  'lots', string.format('%d', tonumber(tracked) - amount) .. '|' .. soonest .. '|' .. head ..
  '|' .. string.format('%d', tonumber(rem) - amount) .. rest)
redis.call('HSET', KEYS[4], key, '|' .. id)
redis.call('SET', KEYS[1], after)
return {'ok', '0', id, 'debit', '-' .. ARGV[2], after, ARGV[3], ARGV[4], '', '', key, '', l}
