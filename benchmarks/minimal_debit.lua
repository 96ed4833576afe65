-- The setup guide's minimal debit (the TypeScript SDK's starting point): GET the balance,
-- refuse if short, DECRBY, XADD the entry with the same nine fields the SDK writes.
-- No idempotency, lots, block sums or holds: the floor a debit's server time is measured
-- against (benchmarks/bench_server_cpu.py).
local balance = tonumber(redis.call('GET', KEYS[1]) or '0')
local amount = tonumber(ARGV[1])
if balance < amount then return {'insufficient', balance, amount} end
local after = redis.call('DECRBY', KEYS[1], amount)
local id = redis.call('XADD', KEYS[2], '*', 'type', 'debit', 'delta', -amount,
                      'balance', after, 'action', ARGV[2], 'app', ARGV[3], 'reason', '',
                      'ref', '', 'idem', ARGV[4], 'meta', '')
return {'ok', id, after}
