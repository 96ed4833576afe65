-- reconcile one chunk of an account's ledger: sum the deltas of up to ARGV[9] entries after
-- ARGV[7] (exclusive; '' = after the last checkpoint, or from the start), adding to the
-- running sum ARGV[8]. When the chunk reaches the end of the stream, compare with the
-- balance in this same script, so an entry appended meanwhile is either summed or not yet
-- there: a concurrent debit can never cause a false mismatch.
-- ARGV[10]: 'repair' to fix a mismatch: the ledger is the truth, the balance is set to its
-- sum and an 'adjust' entry of delta 0 records what was found (never a silent overwrite).
-- Replies: {'more', last_id, sum, read}, or {status, checkpoint_id, sum, read, balance}
-- with status 'ok', 'mismatch' or 'repaired'.
local start, sum = ARGV[7], tonumber(ARGV[8])
local chunk, mode = tonumber(ARGV[9]), ARGV[10]
if start == '' then
  local ck = redis.call('HMGET', K_META, 'ckpt_id', 'ckpt_sum')
  if ck[1] then
    start, sum = ck[1], tonumber(ck[2])
  end
end
local from = '-'
if start ~= '' then from = '(' .. start end
local entries = redis.call('XRANGE', K_TXS, from, '+', 'COUNT', chunk)
local last = start
for i = 1, #entries do
  local f = entries[i][2]
  local d = nil
  if f[3] == 'delta' then
    d = f[4]
  else
    for j = 1, #f, 2 do
      if f[j] == 'delta' then d = f[j + 1] break end
    end
  end
  sum = sum + tonumber(d or '0')
  last = entries[i][1]
end
local read = fmt(#entries)
if #entries == chunk then return {'more', last, fmt(sum), read} end

local bal = tonumber(redis.call('GET', K_BAL) or '0')
if bal == sum then
  if last ~= '' then redis.call('HSET', K_META, 'ckpt_id', last, 'ckpt_sum', fmt(sum)) end
  return {'ok', last, fmt(sum), read, fmt(bal)}
end
if mode ~= 'repair' then return {'mismatch', last, fmt(sum), read, fmt(bal)} end
redis.call('SET', K_BAL, fmt(sum))
local note = '{"found_balance":' .. fmt(bal) .. ',"ledger_sum":' .. fmt(sum) .. '}'
local id = append('adjust', 0, sum, 'reconcile', APP,
                  'reconcile: balance was ' .. fmt(bal) .. ', the ledger sums to ' .. fmt(sum),
                  '', '', note)
redis.call('HSET', K_META, 'ckpt_id', id, 'ckpt_sum', fmt(sum))
return {'repaired', id, fmt(sum), read, fmt(bal)}
