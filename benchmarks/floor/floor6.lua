-- Floor 6 (benchmarks/bench_server_cpu.py --floor): floor8.lua with the idempotency records
-- kept in the account hash too (a layout the SDK does not have: its generations rotate by
-- RENAME, and the TypeScript SDK's keys stay apart): TIME, HMGET, GET, XADD, HSET, SET.
local t = redis.call('TIME')
local NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local key, amount = ARGV[1], tonumber(ARGV[2])
local m = redis.call('HMGET', KEYS[3], 'init', 'closed', 'n', 'bo', 'noctl', 'lots', 'hx', key, '')
if m[8] or NOW - tonumber(m[9]) >= 604800000 then error('general path') end
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
  '|' .. string.format('%d', tonumber(rem) - amount) .. rest, key, '|' .. id)
redis.call('SET', KEYS[1], after)
return {'ok', '0', id, 'debit', '-' .. ARGV[2], after, ARGV[3], ARGV[4], '', '', key, '', l}
