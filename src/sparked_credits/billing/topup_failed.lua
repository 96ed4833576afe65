-- A failed automatic top-up's own alert, once per crossing (topup.py, _failed): the check
-- and the write in one script, in the account's slot, so two workers handling the same
-- crossing at once (or a worker's redelivery after a crash) record one alert.
-- KEYS[1] the account's alert outbox (alerts:{<acct>}), KEYS[2] its top-up failure marks
-- (topupfail:{<acct>}, a hash: crossing alert id -> the failure alert's id).
-- ARGV[1] the crossing's alert id, ARGV[2] the PaymentIntent id, ARGV[3] the reason,
-- ARGV[4] the balance and ARGV[5] the threshold of the crossing.
-- The alert goes first, then its mark; a torn prefix (the alert without its mark) is
-- found in the outbox's latest entries, so it is never written twice either.
-- Reply {'exists' | 'added', failure alert id}.
if redis.replicate_commands then redis.replicate_commands() end
local K_ALERTS, K_MARKS, crossing = KEYS[1], KEYS[2], ARGV[1]
local prior = redis.call('HGET', K_MARKS, crossing)
if prior then return {'exists', prior} end
local latest = redis.call('XREVRANGE', K_ALERTS, '+', '-', 'COUNT', 100)
for i = 1, #latest do
  local f, kind, of = latest[i][2], nil, nil
  for j = 1, #f, 2 do
    if f[j] == 'kind' then kind = f[j + 1] elseif f[j] == 'alert' then of = f[j + 1] end
  end
  if kind == 'topup_failed' and of == crossing then
    redis.call('HSET', K_MARKS, crossing, latest[i][1])
    return {'exists', latest[i][1]}
  end
end
local id = redis.call('XADD', K_ALERTS, 'MAXLEN', '~', '1000', '*', 'kind', 'topup_failed',
                      'balance', ARGV[4], 'threshold', ARGV[5], 'entry', ARGV[2],
                      'reason', ARGV[3], 'alert', crossing)
-- The marks only ever matter for a crossing still being handled: bounded, never grown
-- past 1000 (older crossings were acknowledged long since).
if redis.call('HLEN', K_MARKS) >= 1000 then redis.call('DEL', K_MARKS) end
redis.call('HSET', K_MARKS, crossing, id)
return {'added', id}
